"""One training job's failures, checkpoints and goodput: what ``clusterplan reliability`` prints
and what the Rainier report shows. Both call :func:`analyse`; its :meth:`ReliabilityAnalysis.record`
is the one record every output (terminal, JSON, Markdown, HTML, docs) is printed from.

The failure-free time comes from the step-time estimator (``training.summary.train_record``,
called, not changed); the failure figures from ``failures.inputs_for`` and ``model.closed_form``
(exact mean, Daly 2006; folded outages); ``--trials`` adds the Monte Carlo of ``montecarlo.py``,
which samples the same process. :func:`largest_job` searches the largest job, in whole replicas
of the plan's model-parallel shape, that keeps a goodput target under the same settings.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass, field

from clusterplan import units
from clusterplan.errors import SpecError
from clusterplan.reliability.failures import CheckpointCosts, RecoverySettings, checkpoint_costs, inputs_for
from clusterplan.reliability.model import Estimate, ReliabilityInputs, closed_form
from clusterplan.reliability.montecarlo import MonteCarloResult, simulate
from clusterplan.specs import Model, Plan, System
from clusterplan.specs.plan import MAX_CHIPS
from clusterplan.validation.bands import Banded

#: Goodput the largest-job search keeps (``largest_job_chips_goodput_90``).
GOODPUT_TARGET = 0.9
MAX_TRIALS = 1_000_000


@dataclass(frozen=True)
class ReliabilityRequest:
    """A training job (model, system, plan), its length (``tokens`` or a wall-clock ``duration_s``)
    and how it recovers; ``trials`` > 0 adds the Monte Carlo. Elastic continuation has no effect
    on a plan with one data-parallel replica (there is no other replica to go on)."""

    model: Model
    system: System
    plan: Plan
    tokens: float | None = None
    duration_s: float | None = None
    settings: RecoverySettings = field(default_factory=RecoverySettings)
    trials: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.duration_s is None):
            raise SpecError("--tokens", self.tokens, "give exactly one of --tokens or --duration")
        if self.tokens is not None and not (math.isfinite(self.tokens) and self.tokens > 0):
            raise SpecError("--tokens", self.tokens, "must be > 0")
        if self.duration_s is not None and not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise SpecError("--duration", self.duration_s, "must be > 0")
        if not 0 <= self.trials <= MAX_TRIALS:
            raise SpecError("--trials", self.trials, f"must be between 0 and {MAX_TRIALS:,}")
        if self.seed < 0:
            raise SpecError("--seed", self.seed, "must be >= 0")


@dataclass(frozen=True)
class LargestJob:
    """The largest job, in whole replicas of ``chips_per_replica`` chips, with goodput >= ``target``.
    ``chips`` is None when even one replica falls short; ``at_limit``: the search stopped at the
    largest plan there is (``MAX_CHIPS``), so the answer is a lower bound."""

    target: float
    chips_per_replica: int
    chips: int | None
    goodput: float | None
    at_limit: bool

    def record(self) -> dict[str, object]:
        return {"target_goodput": self.target, "chips_per_replica": self.chips_per_replica,
                "chips": self.chips, "replicas": None if self.chips is None else self.chips // self.chips_per_replica,
                "goodput": self.goodput, "at_limit": self.at_limit}


def _goodput_at(model: Model, system: System, chips_per_replica: int, replicas: int, step_s: float,
                work_s: float, settings: RecoverySettings) -> float:
    inputs = inputs_for(model, system, replicas * chips_per_replica, replicas, settings, step_s)
    return closed_form(inputs, work_s).goodput


def largest_job(model: Model, system: System, plan: Plan, step_s: float, work_s: float,
                settings: RecoverySettings, target: float = GOODPUT_TARGET) -> LargestJob:
    """Largest job (chips) that keeps ``goodput >= target`` under ``settings``: the same model
    (``inputs_for`` + ``closed_form``) at ``r`` replicas of the plan's shape, the same step time
    and failure-free duration, the optimal (clamped) checkpoint interval at each size. Doubling
    brackets the answer, bisection over whole replicas finds it (goodput falls with size)."""
    per = plan.chips // plan.dp
    auto = dataclasses.replace(settings, checkpoint_interval_s=None)
    limit = max(MAX_CHIPS // per, 1)

    def good(replicas: int) -> float:
        return _goodput_at(model, system, per, replicas, step_s, work_s, auto)

    first = good(1)
    if first < target:
        return LargestJob(target, per, None, None, False)
    low, low_goodput, high = 1, first, 2
    while high <= limit:
        value = good(high)
        if value < target:
            break
        low, low_goodput, high = high, value, high * 2
    else:
        value = good(limit)
        if value >= target:
            return LargestJob(target, per, limit * per, value, True)
        high = limit
    while high - low > 1:
        middle = (low + high) // 2
        value = good(middle)
        if value >= target:
            low, low_goodput = middle, value
        else:
            high = middle
    return LargestJob(target, per, low * per, low_goodput, False)


def plan_flags(plan: Plan) -> list[str]:
    """``clusterplan`` options that rebuild ``plan``: the shape, the batch, and every field that
    differs from the Plan default."""
    out: list[str] = []
    always = ("tp", "pp", "cp", "dp", "seq_len", "global_batch", "sp")
    for name, info in Plan.model_fields.items():
        value = getattr(plan, name)
        if value is None or (name not in always and value == info.default):
            continue
        option = "--seq" if name == "seq_len" else "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(option if value else "--no-" + option.removeprefix("--"))
        elif isinstance(value, tuple):
            out += [option, ",".join(str(item) for item in value)]
        else:
            out += [option, str(value)]
    return out


#: The largest job whose interruptions are published by cause: Llama 3 405B pre-training on
#: 16,384 H100 GPUs, 419 unexpected interruptions in 54 days (Dubey et al. 2024, "The Llama 3
#: Herd of Models", section 3.3.4, Table 5).
LARGEST_FAILURE_STUDY_CHIPS = 16_384


@dataclass(frozen=True)
class ReliabilityAnalysis:
    """The answer to a :class:`ReliabilityRequest` (SI units)."""

    request: ReliabilityRequest
    inputs: ReliabilityInputs
    estimate: Estimate
    costs: CheckpointCosts
    step_s: float
    largest: LargestJob
    monte_carlo: MonteCarloResult | None

    @property
    def mean_outage_s(self) -> float:
        """Mean length of one outage, with the interruptions folded into it (M/G/infinity busy
        period ``(exp(rho) - 1) / Lambda``; without folding ``E[S] / (1 - rho)``)."""
        inputs = self.inputs
        rate = inputs.failure_rate + inputs.planned_rate
        if rate == 0:
            return 0.0
        if inputs.fold:
            return (inputs.outage_factor() - 1.0) / rate
        rho = inputs.load
        return math.inf if rho >= 1 else rho / rate / (1.0 - rho)

    def verdict(self) -> str:
        """One sentence: how often, how long, and what it costs."""
        estimate, inputs = self.estimate, self.inputs
        if inputs.failure_rate == 0:
            return "no unexpected interruptions at these rates"
        every = units.format_duration(estimate.mtbf_s)
        outage = units.format_duration(self.mean_outage_s)
        if estimate.outpaced:
            return (f"failures outpace recovery: an interruption every {every}, outages of {outage} on "
                    f"average; the job would spend more than {100 * (1 - estimate.goodput):.0f} % of its "
                    f"time recovering")
        folded = "failures during an outage fold into it" if inputs.fold else "each failure adds its own outage"
        return f"an interruption every {every}, outages of {outage} on average ({folded})"

    def command(self) -> str:
        """The ``clusterplan reliability`` command line that gives this record."""
        request = self.request
        parts = ["clusterplan", "reliability", "--model", request.model.name, "--system", request.system.name,
                 "--chips", str(request.plan.chips), *plan_flags(request.plan)]
        if request.tokens is not None:
            parts += ["--tokens", units.exact_count(request.tokens)]
        else:
            parts += ["--duration", units.exact_duration(request.duration_s or 0.0)]
        parts += request.settings.flags()
        if request.trials:
            parts += ["--trials", str(request.trials), "--seed", str(request.seed)]
        return shlex.join(parts)

    def record(self) -> dict[str, object]:
        request, inputs, estimate = self.request, self.inputs, self.estimate
        plan = request.plan
        record: dict[str, object] = {
            "model": request.model.name, "system": request.system.name, "chips": plan.chips,
            "replicas": plan.dp, "plan": plan.model_dump(mode="json", exclude_none=True),
            "step_time_s": self.step_s,
        }
        if request.tokens is not None:
            record["tokens"] = request.tokens
        record.update(estimate.record())
        record.update({
            "recovery": request.settings.replacement, "elastic": request.settings.elastic,
            "checkpoint": request.settings.checkpoint, "recovery_label": request.settings.label(),
            "interruptions_per_day": inputs.failure_rate * 86400.0,
            "planned_interruptions_per_day": inputs.planned_rate * 86400.0,
            "rates_per_day_by_cause": {k: v * 86400.0 for k, v in inputs.cause_rates.items()},
            "outage_s_by_cause": {k: inputs.outage_s(k) for k in inputs.cause_rates},
            "absorbed_causes": sorted(k for k in inputs.cause_rates if inputs.absorbs(k)),
            "mean_outage_s": self.mean_outage_s,
            "detection_s": inputs.detection_s, "restart_s": inputs.restart_s, "restore_s": inputs.restore_s,
            "replacement_s": inputs.replacement_s,
            "elastic_pause_s": inputs.elastic_pause_s if inputs.elastic else None,
            "checkpoint_write_s": inputs.checkpoint_write_s,
            "checkpoint_storage_s": self.costs.storage_s,
            "persist_interval_s": self.costs.persist_interval_s,
            "persist_interval_clamped": self.costs.persist_clamped,
            "lost_copy_s": inputs.lost_copy_s,
            "verdict": self.verdict(),
            "largest_job_chips_goodput_90": self.largest.chips,
            "largest_job": self.largest.record(),
        })
        if request.duration_s is not None:
            period = request.duration_s
            # Over a fixed period: interruptions in that wall time, effective training time share.
            record["duration_s"] = period
            record["interruptions_expected"] = inputs.failure_rate * period
            record["planned_interruptions_expected"] = inputs.planned_rate * period
            record["effective_training_time_s"] = estimate.goodput * period
        if self.monte_carlo is not None:
            record["monte_carlo"] = self.monte_carlo.record()
            record.update(self.monte_carlo.percentiles())
        record.update(self.bands(record).record())
        record["reproduce"] = self.command()
        return record

    def bands(self, record: dict[str, object]) -> Banded:
        """Ranges of the times from the step-time model's cross-validated errors (failures
        scale with the work they interrupt); goodput itself rests on the failure rates, which
        are inputs: its extrapolation is flagged, not banded."""
        from clusterplan.catalog import hardware_for
        from clusterplan.validation.bands import banded, regime, stored_crossval

        request = self.request
        stage = "MoE" if request.model.moe is not None else "dense"
        found = regime(stored_crossval(), hardware_for(request.system).chip.family, stage, request.plan.chips)
        times = {k: float(v) for k in ("step_time_s", "time_to_train_failure_free_s", "time_to_train_s")
                 if isinstance(v := record.get(k), float) and math.isfinite(v)}
        flags: tuple[str, ...] = ()
        if request.plan.chips > LARGEST_FAILURE_STUDY_CHIPS:
            flags = (f"failure rates per chip come from studies of up to {LARGEST_FAILURE_STUDY_CHIPS:,} "
                     f"accelerators (Llama 3); {request.plan.chips:,} chips is "
                     f"{request.plan.chips / LARGEST_FAILURE_STUDY_CHIPS:,.1f}x that",)
        return banded(found, times, {}, flags)


def job_inputs(model: Model, system: System, plan: Plan, settings: RecoverySettings,
               step_s: float) -> ReliabilityInputs:
    """Reliability inputs of ``plan`` on ``system`` (``failures.inputs_for``)."""
    return inputs_for(model, system, plan.chips, plan.dp, settings, step_s)


def run_estimate(model: Model, system: System, plan: Plan, work_s: float, step_s: float,
                 settings: RecoverySettings | None = None) -> Estimate:
    """The closed form for a run of ``work_s`` failure-free seconds (``clusterplan train``)."""
    settings = settings or RecoverySettings()
    return closed_form(job_inputs(model, system, plan, settings, step_s), work_s, settings.checkpoint_interval_s)


def analyse(request: ReliabilityRequest) -> ReliabilityAnalysis:
    """Failures, checkpoint interval, goodput, time to train, the largest job at 90 % goodput
    and (with ``trials``) the Monte Carlo of one job (module doc)."""
    from clusterplan.catalog import hardware_for
    from clusterplan.training.summary import train_record

    model, system, plan, settings = request.model, request.system, request.plan, request.settings
    base = train_record(model, hardware_for(system), plan, request.tokens, with_failures=False)
    step_s = float(base["step_time_s"])
    work = float(base["time_to_train_s"]) if request.tokens is not None else float(request.duration_s or 0.0)
    inputs = job_inputs(model, system, plan, settings, step_s)
    estimate = closed_form(inputs, work, settings.checkpoint_interval_s)
    costs = checkpoint_costs(model, system, plan.chips, settings)
    largest = largest_job(model, system, plan, step_s, work, settings)
    monte_carlo = None
    if request.trials:
        if estimate.outpaced:
            raise SpecError("--trials", request.trials, "failures outpace recovery (goodput < 1 %): there is "
                                                        "nothing to sample; drop --trials")
        monte_carlo = simulate(inputs, work, estimate.interval_s, request.trials, seed=request.seed)
    return ReliabilityAnalysis(request, inputs, estimate, costs, step_s, largest, monte_carlo)
