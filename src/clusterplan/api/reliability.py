"""How much of a training job survives failures, and how often to checkpoint?
(``clusterplan reliability``)"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from clusterplan import units
from clusterplan.api._base import Answer, PlanOptions, Request, tokens_field
from clusterplan.api._edge import build_plan
from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.errors import SpecError


def _duration(option: str) -> Any:
    """A before-validator: a duration as the CLI takes it (``30s``, ``54d``) or seconds."""

    def parse(value: Any) -> float | None:
        if value is None or (isinstance(value, float | int) and not isinstance(value, bool)):
            return value
        return units.parse_duration(str(value), option)

    return parse


class ReliabilityRequest(Request):
    """A training job (the plan as for train; ``seq_len`` 8192 and ``global_batch`` 2048 unless
    given) over ``tokens`` or ``duration_s`` (exactly one), and how it recovers."""

    model: str
    system: str
    chips: int
    plan: PlanOptions = PlanOptions()
    tokens: float | None = None
    duration_s: float | None = Field(None, description="a period instead of tokens (54d or seconds)")
    checkpoint_interval_s: float | None = Field(None, description="None: the optimum (auto)")
    checkpoint: str = "sync"
    recovery: str = "spares"
    elastic: bool = False
    fold: bool = True
    restart_s: float | None = None
    detection_s: float | None = None
    swap_s: float | None = None
    elastic_pause_s: float | None = None
    persist_interval_s: float | None = None
    failure_scale: float = 1.0
    storage_bandwidth_bytes_per_s: float | None = None
    trials: int = 0
    seed: int = 0
    origins: dict[str, str] = Field(default_factory=dict)

    @field_validator("tokens", mode="before")
    @classmethod
    def tokens_given(cls, value: Any) -> float | None:
        return tokens_field(value)

    @field_validator("duration_s", "checkpoint_interval_s", "restart_s", "detection_s", "swap_s",
                     "elastic_pause_s", "persist_interval_s", mode="before")
    @classmethod
    def durations(cls, value: Any, info: Any) -> float | None:
        name = str(info.field_name).removesuffix("_s")
        option = {"checkpoint_interval": "--checkpoint-interval"}.get(name, "--" + name.replace("_", "-"))
        if value == "auto" and name == "checkpoint_interval":
            return None
        return _duration(option)(value)  # type: ignore[no-any-return]

    @field_validator("storage_bandwidth_bytes_per_s", mode="before")
    @classmethod
    def bandwidth(cls, value: Any) -> float | None:
        if value is None or (isinstance(value, float | int) and not isinstance(value, bool)):
            return value
        return units.parse_bandwidth(str(value), "--storage-bandwidth")


class ReliabilityAnswer(Answer):
    """Goodput and the checkpoint interval (``record``: the ``reliability --json`` object)."""

    goodput: float
    checkpoint_interval_s: float
    young_interval_s: float | None = None
    mtbf_s: float
    interruptions_per_day: float
    time_to_train_s: float | None = None
    fits_memory: bool = True
    #: the plan's `train` record when it does not fit in memory (the CLI prints its memory and
    #: ends with exit code 1: the failures of a job that cannot run are no answer)
    memory_record: dict[str, Any] | None = None


def answer(request: ReliabilityRequest, tokens_text: str | None = None) -> ReliabilityAnswer:
    """The closed form (and Monte Carlo with ``trials``) of the job's failures and checkpoints."""
    from clusterplan.reliability.analysis import ReliabilityRequest as Job
    from clusterplan.reliability.analysis import analyse
    from clusterplan.reliability.failures import RecoverySettings
    from clusterplan.training.recompute import recompute_for
    from clusterplan.training.summary import train_record

    if (request.tokens is None) == (request.duration_s is None):
        raise SpecError("--tokens", tokens_text if tokens_text is not None else request.tokens,
                        "give exactly one of --tokens or --duration")
    if request.recovery not in ("spares", "wait", "elastic"):
        raise SpecError("--recovery", request.recovery, "must be spares, wait or elastic")
    settings = RecoverySettings(
        checkpoint=request.checkpoint,  # type: ignore[arg-type]  # validated by RecoverySettings
        replacement="wait" if request.recovery == "elastic" else request.recovery,  # type: ignore[arg-type]
        elastic=request.elastic or request.recovery == "elastic", fold=request.fold,
        failure_scale=request.failure_scale, storage_bandwidth=request.storage_bandwidth_bytes_per_s,
        checkpoint_interval_s=request.checkpoint_interval_s, detection_s=request.detection_s,
        restart_s=request.restart_s, swap_s=request.swap_s, elastic_pause_s=request.elastic_pause_s,
        persist_interval_s=request.persist_interval_s)
    options = {"seq_len": 8192, "global_batch": 2048, **request.plan.given()}
    origins = request.origins
    spec_model = load_model(request.model, "--model")
    spec_system = load_system(request.system, "--system")
    plan = build_plan(options, request.chips, spec_model, origins)
    hardware = hardware_for(spec_system)
    hardware.chip.require(plan.precision, origins.get("precision", "--precision"))
    # The plan as `train` would run it: recompute left open is chosen to fit.
    plan, choice = recompute_for(spec_model, hardware, plan, request.plan.given())
    if settings.elastic and plan.dp < 2:
        raise SpecError("--elastic", True, f"needs >= 2 data-parallel replicas to go on without one (dp={plan.dp})")
    job = Job(spec_model, spec_system, plan, tokens=request.tokens, duration_s=request.duration_s,
              settings=settings, trials=request.trials, seed=request.seed)
    record = analyse(job).record()  # bad input is refused (exit 2) before the memory verdict
    if choice is not None:
        record["recompute_chosen"] = choice.record()
    fit = train_record(spec_model, hardware, plan, with_failures=False)
    return ReliabilityAnswer(record=record, goodput=record["goodput"],
                             fits_memory=fit["fits_memory"], memory_record=None if fit["fits_memory"] else fit,
                             checkpoint_interval_s=record["checkpoint_interval_s"],
                             young_interval_s=record.get("young_interval_s"), mtbf_s=record["mtbf_s"],
                             interruptions_per_day=record["interruptions_per_day"],
                             time_to_train_s=record.get("time_to_train_s"))
