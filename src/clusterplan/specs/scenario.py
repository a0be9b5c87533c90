"""Scenario files (``catalog/scenarios/*.yaml``) as frozen, validated specs: a Rainier-style
scenario (:class:`RainierScenario`: the cluster, its growth and campus, the training job and
frontier runs, serving) and its ``campus_simulation:`` section (:class:`CampusSimulation`).

Only the schema lives here: every key known, every value's unit and range checked. What needs the
catalog or a planner (model and system names resolved, precisions the chip has, the ``fleet:``
and ``reliability:`` sections) is checked by ``clusterplan/scenario.py: check_scenario``, and the
campus section's defaults and cross-field rules by ``campus/scenario.py: parse_section``.
A fleet scenario (:class:`FleetScenario`: companies, their capex per quarter and hardware mix; a
file of its own or a Rainier-style scenario's ``fleet:`` section) is parsed, its system names
resolved, by ``fleet/timeline.py: parse_scenario``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from clusterplan import units
from clusterplan.specs._base import Seconds, Spec, Watts

PositiveInt = Annotated[int, Field(strict=True, ge=1)]
#: A count as scenario files write it (``15T``, ``1.4M``, ``131.8G``) or a number.
SuffixedCount = Annotated[float, BeforeValidator(lambda v: units.parse_count(v, "count") if isinstance(v, str) else v)]
#: A count written with an optional suffix (``15T`` tokens, ``10M`` tokens/s), > 0 and finite.
Count = Annotated[SuffixedCount, Field(gt=0, allow_inf_nan=False)]
Duration = Annotated[Seconds, Field(gt=0, allow_inf_nan=False)]
MatmulPrecision = Literal["bf16", "fp8", "fp4"]
_Values = tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...]


class TrainingJob(Spec):
    """What a scenario's training job and a campus training job share: the model, the tokens to
    train and the batch, and the matmul precisions the plan search may use."""

    label: str | None = None
    model: str
    tokens: Count = 15e12
    seq_len: PositiveInt
    global_batch: PositiveInt
    precisions: tuple[MatmulPrecision, ...] = Field(("bf16",), min_length=1)

    @property
    def name(self) -> str:
        return self.label or self.model


# ---- a Rainier-style scenario ----------------------------------------------------------------
class GrowthStage(Spec):
    label: str = ""
    chips: PositiveInt
    source: str = ""


class Campus(Spec):
    location: str = ""
    capex_usd: Annotated[float, BeforeValidator(lambda v: units.parse_count(v, "capex_usd")
                                                if isinstance(v, str) else v), Field(ge=0)] = 0.0
    power_w: Annotated[Watts, Field(ge=0)] = 0.0
    source: str = ""


class ScenarioTrainingJob(TrainingJob):
    """A training job the scenario searches a plan for (the report's, or a frontier run)."""

    objective: Literal["time", "cost", "energy"] = "time"
    deadline: Duration = 90 * 86400.0
    max_memory_fraction: float = Field(0.9, gt=0.0, le=1.0)
    routing_gini: float | None = Field(None, ge=0.0, lt=1.0)
    overlap_ep: bool | None = None
    mtp: int | None = Field(None, ge=0, le=8)


class Serving(Spec):
    model: str
    input_tokens: PositiveInt
    output_tokens: PositiveInt
    slo_ttft: Duration = 3.0
    slo_tpot: Duration = 0.06
    demand: Count = 10e6
    objective: Literal["cost", "chips", "power"] = "cost"
    weights: tuple[MatmulPrecision, ...] = Field(("bf16", "fp8"), min_length=1)
    kv_cache: tuple[Literal["bf16", "fp8"], ...] = Field(("bf16", "fp8"), min_length=1)


class RainierScenario(Spec):
    """A Rainier-style scenario file (catalog/scenarios/rainier.yaml): every key known, every
    value checked, names resolved, before the report computes anything."""

    name: str | None = None
    description: str = ""
    system: str
    chips: PositiveInt
    source: str = ""
    growth: tuple[GrowthStage, ...] = ()
    campus: Campus | None = None
    training: ScenarioTrainingJob | None = None
    reliability: dict[str, Any] | None = None  # checked by check_recovery (the section's own parser)
    serving: Serving | None = None
    frontier_runs: tuple[ScenarioTrainingJob, ...] = ()
    fleet: dict[str, Any] | None = None
    campus_simulation: dict[str, Any] | None = None  # checked by campus.scenario.check_section


# ---- the campus_simulation: section (docs/campus.md) -----------------------------------------
#: ASSUMED diurnal shape of chat demand, campus local time (US Eastern for New Carlisle, IN), as
#: a share of the daily peak: a trough of ~35 % at 03:00-05:00, a rise from 07:00 as US users
#: wake, a plateau at 11:00-15:00 when the US East and West coasts both work, an evening
#: shoulder. No hourly traffic of a frontier chat service is public; the shape follows the
#: general day/night swing of US interactive web traffic (assumption).
DEFAULT_DIURNAL = (0.55, 0.45, 0.38, 0.35, 0.35, 0.38, 0.45, 0.60, 0.75, 0.88, 0.96, 1.00,
                   1.00, 1.00, 1.00, 0.98, 0.93, 0.87, 0.82, 0.80, 0.78, 0.74, 0.68, 0.61)
#: ASSUMED weekly shape, Monday first: work use on weekdays, ~25 % less at weekends.
DEFAULT_WEEKLY = (1.0, 1.0, 1.0, 1.0, 1.0, 0.78, 0.75)


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
    weights: tuple[MatmulPrecision, ...] = Field(("bf16", "fp8"), min_length=1)
    kv_cache: tuple[Literal["bf16", "fp8"], ...] = Field(("bf16", "fp8"), min_length=1)
    source: str = ""

    @property
    def name(self) -> str:
        return self.label or self.model


class CampusTrainingJob(TrainingJob):
    """A training job that takes the chips serving leaves, in priority order (0 first)."""

    priority: int = Field(0, strict=True, ge=0)
    min_chips: PositiveInt = 1
    max_chips: PositiveInt | None = None
    #: discrete sizes the job runs at (a plan search each): max_chips, /2, /4, ... above min_chips
    sizes: int = Field(4, strict=True, ge=1, le=8)
    max_memory_fraction: float = Field(0.9, gt=0.0, le=1.0)


class Energy(Spec):
    """Hourly electricity price and grid carbon intensity, campus local time."""

    price_usd_per_kwh: Shape24 | None = None  # None: the economics catalog's price x DEFAULT_PRICE_SHAPE
    carbon_kg_per_kwh: Shape24 | None = None  # None: the catalog's grid average, flat (ASSUMED)
    source: str = ""


class CampusSimulation(Spec):
    """The ``campus_simulation:`` section (campus/scenario.py)."""

    description: str = ""
    serving: tuple[ServingModel, ...] = Field(min_length=1)
    training: tuple[CampusTrainingJob, ...] = ()
    #: the shared policy trains from night_start to night_end (local hours; wraps midnight)
    night_start: int = Field(22, strict=True, ge=0, le=23)
    night_end: int = Field(7, strict=True, ge=0, le=23)
    #: serving allocations are sized for demand x (1 + headroom)
    headroom: float = Field(0.1, ge=0.0, le=1.0, allow_inf_nan=False)
    energy: Energy = Energy()
    source: str = ""


# ---- a fleet scenario (its own file, or a Rainier-style scenario's fleet: section) -------------
QUARTER = re.compile(r"^(\d{4})Q([1-4])$")


def quarter_label(index: int) -> str:
    """The quarter of ``quarter_index`` (inverse): 8101 -> '2025Q2'."""
    return f"{index // 4}Q{index % 4 + 1}"


def quarter_index(label: str) -> int:
    match = QUARTER.match(label)
    if match is None:
        raise ValueError(f"quarter {label!r} must look like 2025Q3")
    return int(match.group(1)) * 4 + int(match.group(2)) - 1


class QuarterPlan(Spec):
    quarter: str
    capex_usd: float = Field(ge=0)
    power_envelope_w: float | None = Field(default=None, gt=0, description="facility power cap (cumulative)")
    source: str = Field(min_length=3)

    @field_validator("capex_usd", mode="before")
    @classmethod
    def _money(cls, value: Any) -> Any:
        return units.parse_count(value, "capex_usd") if isinstance(value, str) else value

    @field_validator("power_envelope_w", mode="before")
    @classmethod
    def _power(cls, value: Any) -> Any:
        return units.parse_power(value, "power_envelope_w") if isinstance(value, str) else value

    @field_validator("quarter")
    @classmethod
    def _quarter(cls, value: str) -> str:
        quarter_index(value)
        return value


class MixEntry(Spec):
    start: str = Field(alias="from")
    system: str
    share: float = Field(gt=0, le=1)
    source: str = Field(min_length=3)

    @field_validator("start")
    @classmethod
    def _quarter(cls, value: str) -> str:
        quarter_index(value)
        return value


class Company(Spec):
    name: str
    ai_share: float = Field(gt=0, le=1, description="share of capex spent on AI clusters")
    ai_share_source: str = Field(min_length=3)
    quarters: tuple[QuarterPlan, ...] = Field(min_length=1)
    mix: tuple[MixEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Company:
        order = [quarter_index(q.quarter) for q in self.quarters]
        for previous, current, plan in zip(order, order[1:], self.quarters[1:], strict=False):
            if current <= previous:
                raise ValueError(f"quarters out of order: {plan.quarter} does not follow the quarter before it")
        return self

    def mix_at(self, quarter: str) -> dict[str, float]:
        """Systems and their capex shares in force in ``quarter`` (latest start wins per system)."""
        index = quarter_index(quarter)
        starts = sorted({quarter_index(entry.start) for entry in self.mix if quarter_index(entry.start) <= index})
        if not starts:
            return {}
        latest = starts[-1]
        shares = {entry.system: entry.share for entry in self.mix if quarter_index(entry.start) == latest}
        total = sum(shares.values())
        return {system: share / total for system, share in shares.items()}


class ReferenceRun(Spec):
    model: str
    tokens: SuffixedCount = Field(gt=0)
    seq_len: int = Field(ge=1)
    global_batch: int = Field(ge=1)


class Reported(Spec):
    """A figure a company reported for a period, to backtest the timeline against."""

    value: SuffixedCount = Field(gt=0)
    source: str = Field(min_length=3)


class Backtest(Spec):
    """What was reported for one company and year (each figure sourced; any may be absent):
    capex (purchases of property and equipment), facility gigawatts added, chips of one system
    shipped (``chips_system``)."""

    company: str
    year: int = Field(ge=2000, le=2100)
    capex_usd: Reported | None = None
    gw_added: Reported | None = None
    chips_shipped: Reported | None = None
    chips_system: str | None = None


class FleetScenario(Spec):
    name: str
    description: str = ""
    companies: tuple[Company, ...] = Field(min_length=1)
    reference_run: ReferenceRun | None = None
    backtest: tuple[Backtest, ...] = ()
    capex_to_online_quarters: int | None = Field(
        default=None, ge=0, le=16,
        description="quarters from capex to chips online (default: catalog/economics.yaml)")
    source: str = Field(min_length=3)
