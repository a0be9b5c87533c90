"""Error bands and extrapolation flags drawn from the cross-validated residuals.

An estimate's band is the spread of the errors the same calibration procedure made on published
runs it had not seen, in the regime nearest the question (chip family and stage: dense
training, mixture-of-experts training, serving):

- a family with published runs of the stage: its rows, each predicted with its whole *table*
  left out (a new publication on a known chip);
- a family without them (its efficiencies come from other families, e.g. Trainium2 from
  Trainium1): every family's rows of the stage, each predicted with its whole *family* left
  out (how far such transfers have been off).

Errors are turned into *speed ratios* s = predicted speed / published speed (s > 1: the model
was optimistic), so time-metric and throughput-metric rows pool. The band is the central
``COVERAGE`` of the empirical distribution of s (linear-interpolated quantiles, numpy's
default): a time T becomes [T * s_low, T * s_high], a rate R [R / s_high, R / s_low]. With few
rows the quantiles are rough; every band carries the number of rows it stands on.

That interval covers its share of the rows it is drawn from, not of a publication it has not
seen: publications differ from one another more than rows within one do. So the interval is
widened until it would have covered ``COVERAGE`` of the runs of tables it did not stand on
(:func:`conformal_margin`: conformalized quantile regression, Romano, Patterson & Candes,
NeurIPS 2019, with whole tables as the exchangeable units, as cross-conformal prediction takes
folds, Barber et al., Annals of Statistics 2021). Before round 22 the serving bands held 39 % of
such runs and the training bands 72 % (docs/validation.md, round 22).

Extrapolation flags name every reason an answer is outside validated ground: inherited
efficiencies, a job larger than the largest validated run of the regime, an MFU above every
validated run's (:func:`mfu_flags`), no rows at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from clusterplan.catalog.loader import load_crossval
from clusterplan.costs.compute import Efficiency
from clusterplan.specs.accuracy import CrossValSummary, RowErrors
from clusterplan.training.step import Hardware
from clusterplan.validation.stacks import STACK_NAMES, STACKS

#: Central share of the cross-validated errors a band covers.
COVERAGE = 0.8

#: Stages as the calibration names them (validation/calibrate.py: stage_of).
STAGES = ("dense", "MoE", "serving")


@dataclass(frozen=True)
class Band:
    """Speed-ratio interval s = predicted / true speed covering ``COVERAGE`` of the regime's
    cross-validated rows."""

    low: float
    high: float
    rows: int
    basis: str
    #: factor each side was widened by so that the band holds ``COVERAGE`` of the runs of tables
    #: it was not drawn from (1: no widening; :func:`conformal_margin`)
    widened: float = 1.0

    def time(self, seconds: float) -> tuple[float, float]:
        """Interval for a duration (or anything proportional to it: chip-hours, energy, cost)."""
        return seconds * self.low, seconds * self.high

    def rate(self, value: float) -> tuple[float, float]:
        """Interval for a rate (tokens/s, MFU, TFLOP/s)."""
        return value / self.high, value / self.low


@dataclass(frozen=True)
class Regime:
    """The nearest validated regime of one estimate, its band and its extrapolation flags."""

    family: str
    stage: str
    band: Band | None
    extrapolation: tuple[str, ...]


def speed_ratio(row: RowErrors, error_pct: float) -> float:
    """Predicted / published speed of one row from its signed % error on its own metric."""
    ratio = 1.0 + error_pct / 100.0
    return ratio if row.higher_is_faster else 1.0 / ratio


def weighted_quantiles(values: list[float], weights: list[float], shares: list[float]) -> list[float]:
    """Quantiles of a weighted sample: the inverse of its weighted empirical distribution,
    interpolated between the midpoints of each value's weight (Hyndman & Fan type 5 with
    weights; equal weights give the type-5 quantiles)."""
    order = np.argsort(values)
    sorted_values = np.asarray(values, dtype=float)[order]
    w = np.asarray(weights, dtype=float)[order]
    midpoints = (np.cumsum(w) - 0.5 * w) / w.sum()
    return [float(v) for v in np.interp(shares, midpoints, sorted_values)]


Unit = Callable[[RowErrors], str]


def _table(row: RowErrors) -> str:
    return row.table


def _family(row: RowErrors) -> str:
    return row.family


def unit_weights(rows: Sequence[RowErrors], unit_of: Unit = _table) -> list[float]:
    """Each row's weight when every unit (a table; or a chip family) weighs as much as any other
    (one large publication must not set every band): 1 / the rows of its unit."""
    per_unit: dict[str, int] = {}
    for row in rows:
        per_unit[unit_of(row)] = per_unit.get(unit_of(row), 0) + 1
    return [1.0 / per_unit[unit_of(row)] for row in rows]


def central_interval(rows: Sequence[RowErrors], ratios: Sequence[float]) -> tuple[float, float]:
    """The central ``COVERAGE`` of ``ratios``, each table weighing equally."""
    tail = (1.0 - COVERAGE) / 2.0
    low, high = weighted_quantiles(list(ratios), unit_weights(rows), [tail, 1.0 - tail])
    return low, high


def _band(rows: list[RowErrors], ratios: list[float], basis: str, margin: float = 0.0,
          left_out: str = "tables") -> Band | None:
    """The central ``COVERAGE`` of ``ratios``, each table weighing equally, widened by the log
    ``margin`` on each side (:func:`conformal_margin`, measured on ``left_out`` units)."""
    if len(ratios) < 2:
        return None
    low, high = central_interval(rows, ratios)
    tables = len({row.table for row in rows})
    weighting = f"{tables} tables, each weighing equally" if tables > 1 else "1 table"
    widened = math.exp(margin)
    note = (f"; widened x{widened:.2f} to hold {100 * COVERAGE:.0f} % of the runs of {left_out} left out"
            if margin > 0 else "")
    return Band(low=low / widened, high=high * widened, rows=len(ratios), basis=f"{basis} ({weighting}{note})",
                widened=widened)


#: Fewest publications (tables; for transfers, chip families) whose runs a stage's conformal
#: margin is taken over; a stage with fewer (MoE training: three tables, two once one is left
#: out) takes the margin of all training runs.
MIN_CONFORMAL_UNITS = 3

@dataclass(frozen=True)
class Margin:
    """A conformal margin: the log factor a stage's bands are widened by on each side, and what
    it was measured on."""

    log_factor: float
    #: publications (tables; for transfers, chip families) and runs scored
    units: int
    rows: int
    #: weighted share of the scored runs the unwidened bands held
    coverage_before: float


def conformity_scores(rows: Sequence[RowErrors], ratio_of: Callable[[RowErrors], float],
                      group_of: Callable[[RowErrors], object], unit_of: Unit = _table) -> list[tuple[RowErrors, float]]:
    """Each run's conformity score against the band drawn, as :func:`regime` draws it, from the
    runs of its group (family and stage; or stage, for transfers) in *other* units (tables; or,
    for transfers, families): how far, in log speed ratio, the run lies outside that band
    (negative: inside). Runs whose group has fewer than two runs in other units are not scored."""
    groups: dict[object, list[RowErrors]] = {}
    for row in rows:
        groups.setdefault(group_of(row), []).append(row)
    scores = []
    for row in rows:
        others = [o for o in groups[group_of(row)] if unit_of(o) != unit_of(row)]
        if len(others) < 2:
            continue
        low, high = central_interval(others, [ratio_of(o) for o in others])
        log_ratio = math.log(ratio_of(row))
        scores.append((row, max(math.log(low) - log_ratio, log_ratio - math.log(high))))
    return scores


def conformal_margin(scores: Sequence[tuple[RowErrors, float]], unit_of: Unit = _table) -> Margin | None:
    """The log factor that widens every band so that it holds ``COVERAGE`` of the scored runs,
    each unit weighing equally. The share is ``COVERAGE`` itself, not split conformal's
    finite-sample ``COVERAGE x (1 + 1/units)``: with three to five tables a stage that would be
    1, the largest score, and the band as wide as the worst publication's worst run (serving:
    0.45-2.4x). Never negative: a band is not narrowed below the spread of the runs it is drawn
    from. None: fewer than :data:`MIN_CONFORMAL_UNITS` units scored."""
    units = len({unit_of(row) for row, _ in scores})
    if units < MIN_CONFORMAL_UNITS:
        return None
    rows = [row for row, _ in scores]
    values = [score for _, score in scores]
    weights = unit_weights(rows, unit_of)
    (factor,) = weighted_quantiles(values, weights, [COVERAGE])
    inside = sum(w for w, v in zip(weights, values, strict=True) if v <= 0.0) / sum(weights)
    return Margin(log_factor=max(0.0, factor), units=units, rows=len(rows), coverage_before=inside)


@dataclass(frozen=True)
class HeldOutCoverage:
    """How often a stage's bands held runs of a publication (for transfers, a chip family) they
    had not seen: each unit's runs banded, as :func:`regime` bands them, from the other units'
    runs, with the margin measured without that unit too (nested, so the margin is tested as it
    is used)."""

    units: int
    rows: int
    #: weighted share of the runs inside the unwidened band, and inside the widened one
    unwidened: float
    widened: float


def _stage_rows(summary: CrossValSummary, stages: Sequence[str], transfer: bool) -> list[RowErrors]:
    field = "error_family_out_pct" if transfer else "error_out_of_sample_pct"
    return [r for r in summary.rows if r.stage in stages and r.table != WIDE_EP_TABLE
            and getattr(r, field) is not None]


def _ratio(transfer: bool) -> Callable[[RowErrors], float]:
    field = "error_family_out_pct" if transfer else "error_out_of_sample_pct"
    return lambda row: speed_ratio(row, _pct(getattr(row, field)))


def _group(transfer: bool) -> Callable[[RowErrors], object]:
    return (lambda row: row.stage) if transfer else (lambda row: (row.family, row.stage))


def held_out_coverage(summary: CrossValSummary, stage: str, transfer: bool = False) -> HeldOutCoverage:
    """Coverage of ``stage``'s bands, before and after the conformal widening, on each table (for
    transfers, each chip family) left out: a run is inside its band when its conformity score
    (:func:`conformity_scores`, against the other units' runs) is at most 0, inside the widened
    band when at most the margin measured without its unit."""
    unit_of = _family if transfer else _table
    scores = conformity_scores(_stage_rows(summary, (stage,), transfer), _ratio(transfer), _group(transfer), unit_of)
    margins: dict[str, float] = {}
    for unit in {unit_of(row) for row, _ in scores}:
        rest = CrossValSummary(tables={}, families={}, rows=[r for r in summary.rows if unit_of(r) != unit])
        margin = _stage_margin(rest, stage, transfer)
        margins[unit] = margin.log_factor if margin is not None else 0.0
    rows = [row for row, _ in scores]
    weights = unit_weights(rows, unit_of)
    total = sum(weights) or 1.0
    return HeldOutCoverage(
        units=len(margins), rows=len(rows),
        unwidened=sum(w for w, (_, score) in zip(weights, scores, strict=True) if score <= 0.0) / total,
        widened=sum(w for w, (row, score) in zip(weights, scores, strict=True)
                    if score <= margins[unit_of(row)]) / total)


@dataclass(frozen=True)
class BandCheck:
    """One stage's bands checked on runs they had not seen (``validate`` reports these): bands
    drawn from the family's runs with their tables left out, checked on each table left out
    (``transfer`` False); or drawn from every family's runs with their family left out, checked
    on each chip family left out (a transfer) (:func:`held_out_coverage`)."""

    stage: str
    transfer: bool
    #: the factor the stage's bands are widened by on each side (1: none; :func:`stage_margin`)
    widened_by: float
    #: tables (for transfers, chip families) left out in turn, and their runs
    units: int
    rows: int
    #: weighted share of the left-out units' runs inside the unwidened and the widened bands
    held_unwidened: float
    held_widened: float


def band_checks(summary: CrossValSummary) -> tuple[BandCheck, ...]:
    """:func:`held_out_coverage` of every stage's own and transfer bands with at least two units
    banded (about 3 s: each left-out unit's margin is measured without it)."""
    checks = []
    for stage in STAGES:
        for transfer in (False, True):
            coverage = held_out_coverage(summary, stage, transfer)
            if coverage.units < 2:
                continue
            margin = stage_margin(summary, stage, transfer)
            checks.append(BandCheck(stage=stage, transfer=transfer,
                                    widened_by=math.exp(margin.log_factor) if margin is not None else 1.0,
                                    units=coverage.units, rows=coverage.rows,
                                    held_unwidened=coverage.unwidened, held_widened=coverage.widened))
    return tuple(checks)


_MARGINS: dict[int, tuple[CrossValSummary, dict[tuple[str, str], Margin | None]]] = {}


def stage_margin(summary: CrossValSummary, stage: str, transfer: bool) -> Margin | None:
    """The conformal margin of ``stage``'s bands: over the stage's runs (all families), each scored
    against its family's band from other tables; or, ``transfer``, against the stage's
    family-left-out band from other families. MoE falls back to all training runs where it has
    too few tables.
    Computed once per stored summary (about 0.1 s)."""
    key = ("transfer" if transfer else "own", stage)
    cached = _MARGINS.get(id(summary))
    if cached is None or cached[0] is not summary:
        if len(_MARGINS) > 8:
            _MARGINS.clear()
        cached = (summary, {})
        _MARGINS[id(summary)] = cached
    margins = cached[1]
    if key not in margins:
        margins[key] = _stage_margin(summary, stage, transfer)
    return margins[key]


def _stage_margin(summary: CrossValSummary, stage: str, transfer: bool) -> Margin | None:
    unit_of = _family if transfer else _table

    def margin(stages: tuple[str, ...]) -> Margin | None:
        scores = conformity_scores(_stage_rows(summary, stages, transfer), _ratio(transfer), _group(transfer),
                                   unit_of)
        return conformal_margin(scores, unit_of)

    found = margin((stage,))
    if found is None and stage == "MoE":
        found = margin(("dense", "MoE"))
    return found


@dataclass(frozen=True)
class Banded:
    """Intervals for an estimate's headline figures, with the regime they come from."""

    bands: dict[str, tuple[float, float]]
    basis: str | None
    coverage: float
    extrapolation: tuple[str, ...]

    def record(self) -> dict[str, object]:
        """The JSON fields every banded command shares: ``bands``, ``band_basis``,
        ``band_coverage`` and ``extrapolation``."""
        return {"bands": {k: [low, high] for k, (low, high) in self.bands.items()}, "band_basis": self.basis,
                "band_coverage": self.coverage, "extrapolation": list(self.extrapolation)}


def banded(found: Regime, times: dict[str, float], rates: dict[str, float],
           extra_flags: tuple[str, ...] = ()) -> Banded:
    """Bands for figures proportional to time (``times``: durations, chip-hours, energy, cost)
    and to speed (``rates``: throughput, MFU), from the regime's speed-ratio band."""
    bands: dict[str, tuple[float, float]] = {}
    if found.band is not None:
        bands.update({name: found.band.time(value) for name, value in times.items()})
        bands.update({name: found.band.rate(value) for name, value in rates.items()})
    basis = found.band.basis if found.band is not None else None
    return Banded(bands, basis, COVERAGE, found.extrapolation + extra_flags)


@cache
def stored_crossval() -> CrossValSummary | None:
    """The cross-validation ``clusterplan calibrate`` stored, read once per process."""
    return load_crossval()


#: The validation-only serving table of attention-DP, wide-EP deployments (DeepSeek-R1 on
#: TensorRT-LLM: MLPerf and NVIDIA's published runs; validation/inference_cases.py): it bands
#: attention-DP answers only, whose deployments it measures, and tells them how far off those
#: runs are (its errors are not a dense model's).
WIDE_EP_TABLE = "inference_wide_ep"


def wide_ep_flags(summary: CrossValSummary | None) -> tuple[str, ...]:
    """What an attention-DP serving answer is told: the published attention-DP, wide-EP runs'
    range of predicted over published speed."""
    rows = [r for r in summary.rows if r.table == WIDE_EP_TABLE and r.error_out_of_sample_pct is not None] \
        if summary is not None else []
    if not rows:
        return ("attention DP with wide EP: no published run of such a deployment is modelled",)
    ratios = sorted(speed_ratio(r, _pct(r.error_out_of_sample_pct)) for r in rows)
    return (f"attention DP with wide EP: the {len(rows)} published runs of such deployments (DeepSeek-R1 on "
            f"TensorRT-LLM: MLPerf, NVIDIA's guides) are predicted {ratios[0]:.1f}-{ratios[-1]:.1f}x too fast: "
            "their iterations take about twice the modelled kernels, and rank synchronisation and prefill "
            "balancing are not modelled",)


def regime(summary: CrossValSummary | None, family: str, stage: str, chips: int | None = None,
           attention_dp: bool = False) -> Regime:
    """The band and extrapolation flags of an estimate for ``family`` at ``stage`` on ``chips``;
    ``attention_dp``: a serving answer whose deployment runs attention data-parallel (banded with
    the published runs of such deployments, :data:`WIDE_EP_TABLE`, and flagged)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, not {stage!r}")
    if summary is None:
        return Regime(family, stage, None, ("no cross-validation stored: run `clusterplan calibrate`",))
    flags: list[str] = list(wide_ep_flags(summary)) if attention_dp and stage == "serving" else []
    label = "training" if stage != "serving" else "serving"
    kind = {"dense": "dense training", "MoE": "mixture-of-experts training", "serving": "serving"}[stage]
    stage_rows = [r for r in summary.rows if r.stage == stage and (attention_dp or r.table != WIDE_EP_TABLE)]
    own = [r for r in stage_rows if r.family == family and r.error_out_of_sample_pct is not None]
    if own:
        margin = stage_margin(summary, stage, transfer=False)
        band = _band(own, [speed_ratio(r, _pct(r.error_out_of_sample_pct)) for r in own],
                     f"{len(own)} published {family} {kind} runs, each predicted with its table left out",
                     margin.log_factor if margin is not None else 0.0)
        donors = _donors(summary, family, stage)
        if not _fitted_on_own_rows(summary, family, stage) and donors:
            # Its rows only validate (a validation-only table): they measure the transfer.
            flags.append(f"efficiencies inherited from {', '.join(donors)}{_stack_note(family, donors, kind)}; "
                         f"the {len(own)} published {family} {kind} runs only measure that transfer")
        largest = max((r.chips for r in own if r.chips), default=None)
        if chips is not None and largest is not None and chips > largest:
            flags.append(f"{chips:,} chips is {chips / largest:,.1f}x the largest validated {family} "
                         f"{label} run ({largest:,} chips)")
    else:
        pooled = [r for r in stage_rows if r.error_family_out_pct is not None]
        margin = stage_margin(summary, stage, transfer=True)
        band = _band(pooled, [speed_ratio(r, _pct(r.error_family_out_pct)) for r in pooled],
                     f"{len(pooled)} published {kind} runs of other families, each predicted with its "
                     "family left out (a transfer)", margin.log_factor if margin is not None else 0.0,
                     left_out="chip families")
        donors = _donors(summary, family, stage)
        flags.append(f"no published {family} {kind} runs: efficiencies inherited"
                     + (f" from {', '.join(donors)}{_stack_note(family, donors, kind)}" if donors else " (priors)"))
        largest = max((r.chips for r in stage_rows if r.chips), default=None)
        if chips is not None and largest is not None and chips > largest:
            flags.append(f"{chips:,} chips is {chips / largest:,.1f}x the largest validated {label} "
                         f"run of any family ({largest:,} chips)")
    if band is None:
        flags.append(f"too few cross-validated {kind} rows for an error band")
    else:
        flags += bias_flags(band)
    return Regime(family, stage, band, tuple(flags))


def bias_flags(band: Band) -> tuple[str, ...]:
    """A flag where the band leaves out the estimate itself: the cross-validated runs it stands
    on were (at least in its central ``COVERAGE``) all slower, or all faster, than predicted, so
    the point estimate is biased for this regime and the range is the better answer."""
    if band.low > 1.0:
        direction, low, high = "slower", band.low, band.high
    elif band.high < 1.0:
        direction, low, high = "faster", 1.0 / band.high, 1.0 / band.low
    else:
        return ()
    return (f"the range excludes the estimate: the published runs it stands on ran {low:.2f}x to "
            f"{high:.2f}x {direction} than predicted; plan on the range, not the point",)


def mfu_flags(summary: CrossValSummary | None, family: str, stage: str, precision: str, mfu: float) -> tuple[str, ...]:
    """A flag where an estimate's MFU is above every published ``family`` run of ``stage`` at
    ``precision`` in the validation tables (their MFU by this model's FLOP count, stored by
    ``calibrate``): the plan is then predicted to run more efficiently than any run the model was
    checked against, which is where a plan search finds the model's optimism first. Where the
    family has published runs of the stage only at other precisions, that is the flag (an fp8
    plan on a chip whose published runs are all bf16); nothing where it has none (the regime's
    own flags say so)."""
    if summary is None or stage not in ("dense", "MoE"):
        return ()
    kind = {"dense": "dense training", "MoE": "mixture-of-experts training"}[stage]
    measured = [r for r in summary.rows if r.family == family and r.stage == stage and r.mfu_published is not None]
    runs = [r for r in measured if r.precision == precision]
    if not runs:
        others = sorted({r.precision for r in measured if r.precision})
        return ((f"no published {family} {kind} run at {precision} (only {', '.join(others)}): its {precision} "
                 "speed is the model's, unchecked",) if others else ())
    top = max(runs, key=lambda r: r.mfu_published or 0.0)
    highest = top.mfu_published or 0.0
    if mfu <= highest:
        return ()
    return (f"MFU {100 * mfu:.1f} % is above every published {family} {kind} run at {precision} "
            f"({len(runs)} runs; highest {100 * highest:.1f} %, {top.table}: {top.label}): "
            "an efficiency no validated run reached",)


#: What ``--overlap-ep`` plans are told: the step model hides every EP all-to-all behind another
#: micro-batch's compute (less the compute the communication kernels take), and the one published
#: pair that isolates the overlap, NVIDIA's Megatron-MoE-ModelZoo Qwen3-235B-A22B runs on 256 H100
#: (best_practice/qwen3/readme.md at e865051: the same TP2 PP8 VPP4 EP32 DeepEP plan at 19.7 s
#: and, with 1F1B A2A overlap, 17.6 s), gains 11 % where the model gives 24 %. The validation
#: tables state the recipes' overlap without crediting it (docs/moe.md).
EP_OVERLAP_FLAG = ("EP all-to-all overlap (overlap_ep) is credited in full: where a published pair isolates it "
                   "(Qwen3-235B-A22B on 256 H100, Megatron-MoE-ModelZoo) it saves 11 % of the step, the model "
                   "24 %; read its saving as an upper bound")


def clock_flags(chip: str, efficiency: Efficiency) -> tuple[str, ...]:
    """A flag where the family's calibration measured its chips' sustained clocks
    (``Efficiency.sustained_clock``) but not this chip's: its tensor throughput is then the
    datasheet's, where the family's chips on record hold their datasheets to the range stated."""
    fitted = efficiency.sustained_clock
    if not fitted or chip in fitted:
        return ()
    low, high = min(fitted.values()), max(fitted.values())
    return (f"{chip}: no published {efficiency.family} run on this chip in the dense fit, so its "
            f"sustained clock is taken at its datasheet's (the family's chips on record were "
            f"fitted at {low:.2f}-{high:.2f} of theirs)",)


def attention_kernel_flags(kernel: str, hardware: Hardware) -> tuple[str, ...]:
    """A flag where a fused-attention library was named for a chip family on which the catalog
    has no measurements of it (catalog/kernels.yaml): it then runs at the family's fitted rate."""
    if kernel == "unfused" or hardware.attention_kernel_measured(kernel):
        return ()
    return (f"attention_kernel={kernel}: catalog/kernels.yaml has no {hardware.chip.family} measurement "
            "of this attention library, so it runs at the family's fitted attention rate",)


def setting_flags(plan: Mapping[str, Any]) -> tuple[str, ...]:
    """Flags for plan settings whose modelled effect the published runs do not support in full
    (a training plan's JSON record, ``train_record(...)["plan"]``)."""
    return (EP_OVERLAP_FLAG,) if plan.get("overlap_ep") and plan.get("ep", 1) > 1 else ()


def _pct(value: float | None) -> float:
    assert value is not None  # the callers keep only rows that have it
    return value


def _donors(summary: CrossValSummary, family: str, stage: str) -> list[str]:
    """The families whose fit ``family`` inherits at ``stage``: as the stored calibration records
    them, else (a family the stored calibration predates) by calibrate.py's rule over the stored
    rows: the families of its software stack with rows, else every family with rows."""
    record = summary.families.get(family)
    if record is not None:
        for source in record.stages:
            if source.stage == stage:
                return [f for f in source.families if f != family]
        return []
    with_rows = sorted({r.family for r in summary.rows if r.stage == stage and r.family != family})
    same = [f for f in with_rows if STACKS.get(f) is not None and STACKS.get(f) == STACKS.get(family)]
    return same or with_rows


def _fitted_on_own_rows(summary: CrossValSummary, family: str, stage: str) -> bool:
    """Whether the stored calibration fitted ``family``'s ``stage`` on rows of its own (True
    where the calibration predates the record: its rows were then all fitted)."""
    record = summary.families.get(family)
    if record is None:
        return True
    return any(source.stage == stage and family in source.families for source in record.stages)


def _stack_note(family: str, donors: list[str], kind: str) -> str:
    """Whether the inherited fit comes from the family's own software stack or, where no family
    of its stack has published runs (Gaudi), from every family's rows."""
    stack = STACKS.get(family)
    if stack is None:
        return ""
    name = STACK_NAMES.get(stack, stack)
    if all(STACKS.get(d) == stack for d in donors):
        return f" (same software stack: {name})"
    return (f" (no {name} family has published {kind} runs: one fit of every family's rows, "
            "a transfer across software stacks)")
