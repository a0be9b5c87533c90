"""Run validation cases through the estimator and score them (per-row error, MAPE per table)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clusterplan.catalog import hardware_for, load_efficiency
from clusterplan.costs.compute import Efficiency
from clusterplan.specs import Plan
from clusterplan.training import memory as mem
from clusterplan.training.batch import PlanBatch
from clusterplan.training.recompute import least_recompute_that_fits
from clusterplan.training.step import Hardware, StepEstimate, estimate
from clusterplan.validation.case import Case, higher_is_faster


@dataclass(frozen=True)
class Result:
    """One case's prediction. Training rows also carry the memory estimate: every published
    run ran, so its configuration fits, and ``fits`` False is a memory-model error."""

    case: Case
    predicted: float | None
    memory_bytes: float | None = None
    capacity_bytes: float | None = None
    # Memory with the row's recipe-only settings (Case.recipe_fields) at the CLI's defaults.
    memory_bytes_at_defaults: float | None = None
    # The metric with those settings at the CLI's defaults (run_case(at_defaults=True); None:
    # not computed, or the row has no recipe-only settings, so it equals ``predicted``).
    predicted_at_defaults: float | None = None

    @property
    def fits(self) -> bool | None:
        """Whether the predicted memory per chip fits the chip's capacity (None: not a training row)."""
        if self.memory_bytes is None or self.capacity_bytes is None:
            return None
        return self.memory_bytes <= self.capacity_bytes

    @property
    def fits_at_defaults(self) -> bool | None:
        """Whether the printed plan fits when the settings only the recipe gives are left at the
        CLI's defaults, as a user who types the printed plan runs it (None: not a training row)."""
        if self.memory_bytes_at_defaults is None or self.capacity_bytes is None:
            return None
        return self.memory_bytes_at_defaults <= self.capacity_bytes

    @property
    def error(self) -> float | None:
        """Signed relative error (predicted - published) / published."""
        return self._relative_error(self.predicted)

    @property
    def error_at_defaults(self) -> float | None:
        """Signed relative error of the printed plan run with the recipe-only settings at the
        CLI's defaults, as a user who types only what the publication prints gets it; the
        ``error`` where the row has no recipe-only settings."""
        if self.predicted_at_defaults is None:
            return self.error
        return self._relative_error(self.predicted_at_defaults)

    def _relative_error(self, predicted: float | None) -> float | None:
        if predicted is None or not math.isfinite(self.case.published) or self.case.published == 0:
            return None
        return (predicted - self.case.published) / self.case.published


def metric_of(case: Case, result: StepEstimate) -> float:
    if case.metric == "step_time_s":
        return float(result.step_time[0])
    if case.metric == "tokens_per_s_per_chip":
        return float(result.tokens_per_s_per_chip[0]) * case.devices_per_chip
    if case.metric == "model_tflops_per_chip":
        return float(result.model_flops_per_s_per_chip[0]) / 1e12
    raise ValueError(f"unknown metric {case.metric}")


EfficiencyLookup = Callable[[str], Efficiency]


def defaults_plan(case: Case, hardware: Hardware | None = None) -> Plan | None:
    """The row's plan with its recipe-only settings (``Case.recipe_fields``) at the CLI's
    defaults, or None where the row has none. With ``hardware``, and the recompute among those
    settings, the recompute is then the one ``clusterplan train`` chooses when it is left open:
    the default if it fits, else the fastest escalation that fits (training/recompute.py)."""
    if case.plan is None or case.model is None or not case.recipe_fields:
        return None
    defaults = {name: Plan.model_fields[name].default for name in case.recipe_fields}
    plan = Plan.model_validate({**case.plan.model_dump(), **defaults})
    if hardware is not None and "recompute" in case.recipe_fields:
        choice = least_recompute_that_fits(case.model, hardware, plan)
        plan = plan if choice is None else choice.plan
    return plan


def case_hardware(case: Case, efficiency: EfficiencyLookup = load_efficiency) -> Hardware:
    """The hardware of a training row with its family's efficiencies (the row must have a system)."""
    assert case.system is not None
    # Build from the catalog system itself: Hardware applies the family's collective multipliers
    # to the tiers, so reusing another Hardware's system would apply them twice.
    chip = case.chip if case.chip is not None else hardware_for(case.system).chip
    return Hardware(system=case.system, chip=chip, efficiency=efficiency(chip.family))


def published_mfu(case: Case) -> float | None:
    """The MFU the published run reached, by this model's FLOP count: the predicted MFU times
    the published over the predicted speed (None: not a training row with a plan). For one plan
    MFU is proportional to speed, so the efficiencies of the prediction cancel; the figure
    depends only on the model's FLOPs per token and the chip's dense peak at the row's
    precision, as the MFU ``train`` reports does."""
    if case.skip is not None or case.predict is not None or case.model is None or case.plan is None:
        return None
    if case.system is None or not math.isfinite(case.published) or case.published <= 0:
        return None
    result = estimate(case.model, case_hardware(case), PlanBatch.from_plans([case.plan], case.model))
    predicted = metric_of(case, result)
    if not predicted > 0:
        return None
    faster = case.published / predicted if higher_is_faster(case.metric) else predicted / case.published
    return float(result.mfu[0]) * faster


def run_case(case: Case, efficiency: EfficiencyLookup = load_efficiency, at_defaults: bool = False) -> Result:
    """Predict one row. ``at_defaults``: also run the printed plan with its recipe-only settings
    at the CLI's defaults (a second step estimate; the calibration's fits leave it off, the
    memory test at defaults needs only the memory model and always runs)."""
    if case.skip is None and case.predict is not None:
        return Result(case, case.predict(efficiency(case.family)))
    if case.skip is not None or case.model is None or case.system is None or case.plan is None:
        return Result(case, None)
    hardware = case_hardware(case, efficiency)
    chip = hardware.chip
    batch = PlanBatch.from_plans([case.plan], case.model)
    result = estimate(case.model, hardware, batch)
    memory = float(result.memory[0])
    memory_at_defaults, predicted_at_defaults = memory, None
    plan = defaults_plan(case, hardware)
    if plan is not None and at_defaults:
        defaults_result = estimate(case.model, hardware, PlanBatch.from_plans([plan], case.model))
        predicted_at_defaults = metric_of(case, defaults_result)
        memory_at_defaults = float(defaults_result.memory[0])
    elif plan is not None:
        breakdown = mem.memory_breakdown(case.model, PlanBatch.from_plans([plan], case.model),
                                         hardware.efficiency.reserved_bytes)
        memory_at_defaults = float(sum(float(part[0]) for part in breakdown.values()))
    return Result(case, metric_of(case, result), memory, float(chip.hbm_bytes), memory_at_defaults,
                  predicted_at_defaults)


def run(cases: Sequence[Case], efficiency: EfficiencyLookup = load_efficiency,
        at_defaults: bool = False) -> list[Result]:
    return [run_case(case, efficiency, at_defaults) for case in cases]


def mape(results: Sequence[Result]) -> float:
    """Mean absolute percentage error over the rows that were modelled (nan if none)."""
    return _mean_abs_pct([r.error for r in results])


def _mean_abs_pct(errors: Sequence[float | None]) -> float:
    known = [abs(e) for e in errors if e is not None]
    return 100.0 * sum(known) / len(known) if known else math.nan


def mape_at_defaults(results: Sequence[Result]) -> float:
    """Mean absolute percentage error with every row's recipe-only settings at the CLI's
    defaults (``Result.error_at_defaults``; nan if no row was modelled)."""
    return _mean_abs_pct([r.error_at_defaults for r in results])


def fits_fraction_at_defaults(results: Sequence[Result]) -> float:
    """Fraction of training rows whose printed plan fits with the recipe-only settings at the
    CLI's defaults (NaN without training rows)."""
    checked = [r.fits_at_defaults for r in results if r.fits_at_defaults is not None]
    return sum(bool(f) for f in checked) / len(checked) if checked else math.nan


def fits_fraction(results: Sequence[Result]) -> float:
    """Fraction of the training rows with a memory estimate that the model says fit (nan if none)."""
    checked = [r.fits for r in results if r.fits is not None]
    return sum(checked) / len(checked) if checked else math.nan


def memory_tested(rows: Sequence[Result]) -> list[Result]:
    """Rows of a memory-only table (no published speed: the Megatron-Bridge recipes,
    ``registry.MEMORY_ONLY_TABLES``): modelled, with a memory estimate and no error."""
    return [r for r in rows if r.case.skip is None and r.error is None and r.fits is not None]


def by_table(results: Sequence[Result]) -> dict[str, list[Result]]:
    tables: dict[str, list[Result]] = {}
    for result in results:
        tables.setdefault(result.case.table, []).append(result)
    return tables
