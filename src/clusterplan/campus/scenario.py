"""The campus simulation's inputs: a scenario's ``campus_simulation:`` section, validated whole.

A Rainier-style scenario (``catalog/scenarios/rainier.yaml``) may carry a ``campus_simulation:``
section: the serving models with their demand profiles, the training jobs, the shared policy's
night window, the serving headroom and the hourly energy price and carbon intensity. A scenario
without one gets a section built from its ``serving:`` and ``training:`` blocks with the
defaults below. Every default that is not a published figure is marked ASSUMED here, in the
scenario file and in ``docs/campus.md``.

Sources of the practice modelled: Semafor (2025-10-29, one source) reports that most of Project
Rainier's chips serve inference and that training runs at night and pauses during the day.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError

from clusterplan import units
from clusterplan.catalog.loader import spec_error
from clusterplan.errors import SpecError
from clusterplan.specs._base import Seconds, Spec

POLICIES = ("shared", "dedicated", "slo-aware")
MAX_DAYS = 3660
#: Hours in an average month (365.25 days / 12), for the demand growth per month.
HOURS_PER_MONTH = 365.25 * 24.0 / 12.0

PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Count = Annotated[float, BeforeValidator(lambda v: units.parse_count(v, "count") if isinstance(v, str) else v),
                  Field(gt=0, allow_inf_nan=False)]
Duration = Annotated[Seconds, Field(gt=0, allow_inf_nan=False)]
_Values = tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...]

#: ASSUMED diurnal shape of chat demand, campus local time (US Eastern for New Carlisle, IN), as
#: a share of the daily peak: a trough of ~35 % at 03:00-05:00, a rise from 07:00 as US users
#: wake, a plateau at 11:00-15:00 when the US East and West coasts both work, an evening
#: shoulder. No hourly traffic of a frontier chat service is public; the shape follows the
#: general day/night swing of US interactive web traffic (assumption).
DEFAULT_DIURNAL = (0.55, 0.45, 0.38, 0.35, 0.35, 0.38, 0.45, 0.60, 0.75, 0.88, 0.96, 1.00,
                   1.00, 1.00, 1.00, 0.98, 0.93, 0.87, 0.82, 0.80, 0.78, 0.74, 0.68, 0.61)
#: ASSUMED weekly shape, Monday first: work use on weekdays, ~25 % less at weekends.
DEFAULT_WEEKLY = (1.0, 1.0, 1.0, 1.0, 1.0, 0.78, 0.75)
#: ASSUMED time-of-use multipliers of the electricity price, local time: off-peak 22:00-06:00
#: at 0.75x, on-peak 14:00-19:00 at 1.35x, else 1x (the shape of US industrial time-of-use
#: tariffs; the level is the economics catalog's average price).
DEFAULT_PRICE_SHAPE = tuple(0.75 if (h >= 22 or h < 6) else 1.35 if 14 <= h < 19 else 1.0 for h in range(24))


def _shape(length: int) -> Callable[[tuple[float, ...]], tuple[float, ...]]:
    def check(values: tuple[float, ...]) -> tuple[float, ...]:
        if len(values) != length:
            raise ValueError(f"must have {length} values (one per {'hour' if length == 24 else 'day'}), "
                             f"not {len(values)}")
        if max(values) <= 0:
            raise ValueError("must have a value > 0")
        return values
    return check


Shape24 = Annotated[_Values, AfterValidator(_shape(24))]
Shape7 = Annotated[_Values, AfterValidator(_shape(7))]


class ServingModel(Spec):
    """A model served on the campus and its demand (output tokens/s) hour by hour."""

    label: str | None = None
    model: str
    input_tokens: PositiveInt = 2000
    output_tokens: PositiveInt = 500
    slo_ttft: Duration = 3.0
    slo_tpot: Duration = 0.06
    #: output tokens/s at the busiest hour of the first week
    peak_demand: Count
    diurnal: Shape24 = DEFAULT_DIURNAL
    weekly: Shape7 = DEFAULT_WEEKLY
    growth_per_month: float = Field(0.03, ge=-0.5, le=2.0, allow_inf_nan=False)
    objective: Literal["cost", "chips", "power"] = "cost"
    weights: tuple[Literal["bf16", "fp8", "fp4"], ...] = Field(("bf16", "fp8"), min_length=1)
    kv_cache: tuple[Literal["bf16", "fp8"], ...] = Field(("bf16", "fp8"), min_length=1)
    source: str = ""

    @property
    def name(self) -> str:
        return self.label or self.model


class TrainingJob(Spec):
    """A training job that takes the chips serving leaves, in priority order (0 first)."""

    label: str | None = None
    model: str
    tokens: Count = 15e12
    seq_len: PositiveInt
    global_batch: PositiveInt
    precisions: tuple[Literal["bf16", "fp8", "fp4"], ...] = Field(("bf16",), min_length=1)
    priority: int = Field(0, strict=True, ge=0)
    min_chips: PositiveInt = 1
    max_chips: PositiveInt | None = None
    #: discrete sizes the job runs at (a plan search each): max_chips, /2, /4, ... above min_chips
    sizes: int = Field(4, strict=True, ge=1, le=8)
    max_memory_fraction: float = Field(0.9, gt=0.0, le=1.0)

    @property
    def name(self) -> str:
        return self.label or self.model


class Energy(Spec):
    """Hourly electricity price and grid carbon intensity, campus local time."""

    price_usd_per_kwh: Shape24 | None = None  # None: the economics catalog's price x DEFAULT_PRICE_SHAPE
    carbon_kg_per_kwh: Shape24 | None = None  # None: the catalog's grid average, flat (ASSUMED)
    source: str = ""


class CampusSimulation(Spec):
    """The ``campus_simulation:`` section (module doc)."""

    description: str = ""
    serving: tuple[ServingModel, ...] = Field(min_length=1)
    training: tuple[TrainingJob, ...] = ()
    #: the shared policy trains from night_start to night_end (local hours; wraps midnight)
    night_start: int = Field(22, strict=True, ge=0, le=23)
    night_end: int = Field(7, strict=True, ge=0, le=23)
    #: serving allocations are sized for demand x (1 + headroom)
    headroom: float = Field(0.1, ge=0.0, le=1.0, allow_inf_nan=False)
    energy: Energy = Energy()
    source: str = ""


def default_section(scenario: dict[str, Any]) -> dict[str, Any]:
    """A section built from a scenario's ``serving:`` and ``training:`` blocks (the demand taken
    as the peak of the first week), with the default shapes."""
    serving = scenario.get("serving")
    if not isinstance(serving, dict):
        raise SpecError("scenario.campus_simulation", None,
                        "the scenario needs a campus_simulation: section or a serving: block to simulate")
    keep = ("model", "input_tokens", "output_tokens", "slo_ttft", "slo_tpot", "objective", "weights", "kv_cache")
    section: dict[str, Any] = {"serving": [{**{k: serving[k] for k in keep if k in serving},
                                            "peak_demand": serving.get("demand", "10M")}]}
    training = scenario.get("training")
    if isinstance(training, dict):
        keep_job = ("model", "tokens", "seq_len", "global_batch", "precisions", "max_memory_fraction")
        section["training"] = [{k: training[k] for k in keep_job if k in training}]
    return section


def parse_section(data: Any, where: str = "scenario.campus_simulation") -> CampusSimulation:
    """The section as a :class:`CampusSimulation`; any problem is one SpecError on ``where.<key>``."""
    if not isinstance(data, dict):
        raise SpecError(where, data, "must be a mapping (serving, training, night_start, ...)")
    try:
        section = CampusSimulation.model_validate(data)
    except ValidationError as error:
        raise spec_error(error, where, CampusSimulation) from None
    for index, job in enumerate(section.training):
        if job.max_chips is not None and job.max_chips < job.min_chips:
            raise SpecError(f"{where}.training[{index}].max_chips", job.max_chips,
                            f"must be >= min_chips ({job.min_chips})")
    if section.night_start == section.night_end:
        raise SpecError(f"{where}.night_end", section.night_end, "must differ from night_start (a night of 0 h)")
    return section


def check_policy(policy: str) -> tuple[str, ...]:
    """The policies ``--policy`` names: one of POLICIES, or ``all``."""
    if policy == "all":
        return POLICIES
    if policy not in POLICIES:
        raise SpecError("--policy", policy, f"must be one of {', '.join(POLICIES)} or all")
    return (policy,)


def check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise SpecError("--days", days, f"must be a whole number of days from 1 to {MAX_DAYS}")
    return days
