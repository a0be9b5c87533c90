"""What the hourly simulation needs, computed once: each served model's best deployment, each
training job's plan at a handful of sizes, the power and cost coefficients of one chip.

- **Serving**: the deployment search of ``clusterplan capacity`` (``inference/deployments.py``:
  ``search_deployments``, the request-level simulator's highest rate at the p99 SLO) runs once per
  model, at the model's peak demand. Then, hour by hour, ``chips(demand) = ceil(demand / rate per
  replica) x chips per replica``: the per-replica rate at the SLO does not depend on how many
  replicas run (round-robin replicas are independent), so nothing is re-simulated per hour.
- **Training**: the plan search (``training/search.py``, fastest plan on at most N chips) at a
  few sizes (``sizes``: max_chips, /2, /4, ... in whole allocation units); each size keeps the
  chips its best plan uses. Goodput at each size comes from the reliability closed form
  (``reliability/model.py: closed_form`` with ``failures.inputs_for``: Daly's complete model,
  outages folded) under the scenario's recovery settings; the cost of a resize from the same
  module's checkpoint and restart figures (``failures.checkpoint_costs``, ``restart_seconds``).
- **Power**: ``costs/power.py: cluster_power`` of one node at activity 0 and 1 gives, per chip,
  the always-on part (idle accelerator, host share, network share) and the dynamic part; it is
  linear in activity, so an hour's IT power is ``chips x base + dynamic x sum(chips x activity)``
  (exact up to the rounding of hosts to whole nodes). Serving activity is
  ``inference/capacity.py: serving_activity``'s formula, training activity
  ``costs/power.py: training_activity`` of the plan's step.
- **Money**: ``costs/money.py: cost_per_chip_hour`` without its electricity (capital charge,
  depreciation, maintenance: the same every hour), plus each hour's energy at its price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clusterplan.catalog import load_economics, load_model
from clusterplan.costs.power import cluster_power, training_activity
from clusterplan.errors import NoAnswerError, SpecError
from clusterplan.reliability.failures import RecoverySettings, checkpoint_costs, inputs_for, restart_seconds
from clusterplan.reliability.model import closed_form
from clusterplan.specs.scenario import CampusSimulation, CampusTrainingJob, ServingModel
from clusterplan.training.step import Hardware

#: Failure-free work over which each size's goodput is taken (the closed form's steady state;
#: goodput hardly depends on it once it is much longer than the checkpoint interval).
GOODPUT_HORIZON_S = 30 * 86400.0


@dataclass(frozen=True)
class ServingSizing:
    """One served model's best deployment at its SLO (found once)."""

    name: str
    model: str
    deployment: str
    chips_per_replica: int
    output_tokens_per_s_per_replica: float
    input_tokens: int
    output_tokens: int
    active_params: float
    peak_flops_per_chip: float
    slo_ttft_s: float
    slo_tpot_s: float
    candidates_simulated: int

    def record(self) -> dict[str, object]:
        return {"name": self.name, "model": self.model, "deployment": self.deployment,
                "chips_per_replica": self.chips_per_replica,
                "output_tokens_per_s_per_replica": self.output_tokens_per_s_per_replica,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "slo": {"ttft_p99_s": self.slo_ttft_s, "tpot_p99_s": self.slo_tpot_s},
                "candidates_simulated": self.candidates_simulated}


@dataclass(frozen=True)
class TrainingLevel:
    """One size a training job runs at: the best plan on at most ``limit`` chips."""

    limit: int
    chips: int
    plan: str
    tokens_per_s: float
    step_s: float
    mfu: float
    activity: float
    goodput: float
    restart_s: float

    def record(self) -> dict[str, object]:
        return {"limit_chips": self.limit, "chips": self.chips, "plan": self.plan, "tokens_per_s": self.tokens_per_s,
                "step_time_s": self.step_s, "mfu": self.mfu, "activity": self.activity, "goodput": self.goodput,
                "restart_s": self.restart_s}


@dataclass(frozen=True)
class TrainingSizing:
    """A training job's sizes (ascending chips) and what a resize costs: a checkpoint of the whole
    state to storage when it stops or shrinks or grows, then a restart and a restore re-sharded
    from storage at the new size."""

    name: str
    model: str
    tokens: float
    priority: int
    levels: tuple[TrainingLevel, ...]
    checkpoint_s: float
    restore_s: float
    search_time_s: float

    def record(self) -> dict[str, object]:
        return {"name": self.name, "model": self.model, "tokens": self.tokens, "priority": self.priority,
                "checkpoint_s": self.checkpoint_s, "restore_s": self.restore_s,
                "levels": [level.record() for level in self.levels], "search_time_s": self.search_time_s}


@dataclass(frozen=True)
class ChipPower:
    """IT watts of one chip: ``base_w + dynamic_w x activity``; facility = IT x ``pue``."""

    base_w: float
    dynamic_w: float
    pue: float


@dataclass(frozen=True)
class Prices:
    """Capital and fixed costs of a chip-hour (no electricity), from costs/money.py."""

    capital_usd_per_chip_hour: float
    note: str = ""


def chip_power(hardware: Hardware) -> ChipPower:
    """Per-chip power coefficients from ``cluster_power`` of one node at activity 0 and 1."""
    economics = load_economics()
    node = hardware.system.chips_per_node
    idle = cluster_power(hardware.system, hardware.chip, node, 0.0, economics)
    full = cluster_power(hardware.system, hardware.chip, node, 1.0, economics)
    return ChipPower(idle.it_w / node, (full.it_w - idle.it_w) / node, economics.pue.value)


def prices(hardware: Hardware) -> Prices:
    """The chip-hour cost without electricity (charged hour by hour at its price instead)."""
    from clusterplan.costs.money import cost_per_chip_hour

    try:
        cost = cost_per_chip_hour(hardware.system, hardware.chip, load_economics(), 1.0)
    except SpecError as missing:
        return Prices(math.nan, str(missing))
    return Prices(float(cost["total_usd"]) - float(cost["electricity_usd"]))


def size_serving(spec: ServingModel, hardware: Hardware, where: str) -> ServingSizing:
    """The best deployment of one served model at its SLO, by the ``capacity`` search, once."""
    from clusterplan.inference.capacity import Slo
    from clusterplan.inference.deployments import search_deployments

    model = load_model(spec.model, f"{where}.model")
    slo = Slo(ttft_p99_s=spec.slo_ttft, tpot_p99_s=spec.slo_tpot)
    try:
        result = search_deployments(model, hardware, spec.peak_demand, slo, spec.input_tokens, spec.output_tokens,
                                    objective=spec.objective, weights=spec.weights, kv_caches=spec.kv_cache, top=1)
    except NoAnswerError as error:
        raise NoAnswerError(f"{where}.slo_ttft", spec.slo_ttft, error.rule) from None
    best = result.ranked[0]
    assert best.rate is not None and best.replica is not None
    return ServingSizing(spec.name, model.name, best.label(), best.deployment.chips, best.rate * spec.output_tokens,
                         spec.input_tokens, spec.output_tokens, float(model.active_params),
                         float(best.replica.peak_flops_per_chip), spec.slo_ttft, spec.slo_tpot, result.simulated)


def level_limits(job: CampusTrainingJob, campus_chips: int, unit: int) -> list[int]:
    """The chip limits a job's plan is searched at: max_chips, /2, /4, ... (``sizes`` of them) in
    whole allocation units of ``unit`` chips, none below min_chips."""
    top = min(job.max_chips or campus_chips, campus_chips)
    limits: list[int] = []
    for k in range(job.sizes):
        limit = (top >> k) // unit * unit
        if limit >= max(job.min_chips, unit) and limit not in limits:
            limits.append(limit)
    return limits


def size_training(job: CampusTrainingJob, hardware: Hardware, campus_chips: int, settings: RecoverySettings,
                  where: str) -> TrainingSizing:
    """A training job's plans at its few sizes (plan search, cached by chip limit), each with its
    goodput under ``settings``, and its checkpoint and restore times for a resize."""
    import time

    from clusterplan.training.search import SearchSpace, plan_label, search

    model = load_model(job.model, f"{where}.model")
    unit = hardware.system.allocation_size
    limits = level_limits(job, campus_chips, unit)
    if not limits:
        raise SpecError(f"{where}.min_chips", job.min_chips,
                        f"no size of whole {unit}-chip units between min_chips and "
                        f"{min(job.max_chips or campus_chips, campus_chips):,} chips")
    space = SearchSpace(precisions=job.precisions, chips_at_most=True)
    levels: dict[int, TrainingLevel] = {}
    start = time.perf_counter()
    for limit in sorted(limits, reverse=True):
        result = search(model, hardware, limit, job.seq_len, job.global_batch, space, objective="time",
                        max_memory_fraction=job.max_memory_fraction, top=1, tokens=job.tokens)
        if not result.best:
            continue  # nothing fits at this size: smaller ones will not either
        best = result.best[0]
        chips = int(best["chips"])
        if chips in levels or chips < job.min_chips:
            continue
        step_s = float(best["step_time_s"])
        inputs = inputs_for(model, hardware.system, chips, int(best["plan"]["dp"]), settings, step_s)
        goodput = closed_form(inputs, GOODPUT_HORIZON_S, settings.checkpoint_interval_s).goodput
        restart = settings.restart_s if settings.restart_s is not None else restart_seconds(hardware.system, chips)
        levels[chips] = TrainingLevel(limit, chips, plan_label(best["plan"]), float(best["tokens_per_s"]), step_s,
                                      float(best["mfu"]),
                                      training_activity(best["time_breakdown_s"], step_s), float(goodput), restart)
    if not levels:
        raise NoAnswerError(f"{where}.model", job.model,
                            f"no plan fits on up to {limits[0]:,} chips of {hardware.system.name}")
    costs = checkpoint_costs(model, hardware.system, max(levels), settings)
    return TrainingSizing(job.name, model.name, job.tokens, job.priority,
                          tuple(levels[c] for c in sorted(levels)), costs.storage_s, costs.storage_s,
                          time.perf_counter() - start)


@dataclass(frozen=True)
class Sizing:
    """Everything computed once for a campus."""

    serving: tuple[ServingSizing, ...]
    training: tuple[TrainingSizing, ...]
    power: ChipPower
    prices: Prices
    allocation_unit: int


def size_campus(section: CampusSimulation, hardware: Hardware, campus_chips: int, settings: RecoverySettings,
                where: str = "scenario.campus_simulation") -> Sizing:
    serving = tuple(size_serving(spec, hardware, f"{where}.serving[{i}]") for i, spec in enumerate(section.serving))
    order = sorted(range(len(section.training)), key=lambda i: (section.training[i].priority, i))
    training = tuple(size_training(section.training[i], hardware, campus_chips, settings, f"{where}.training[{i}]")
                     for i in order)
    return Sizing(serving, training, chip_power(hardware), prices(hardware), hardware.system.allocation_size)

