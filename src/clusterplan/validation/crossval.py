"""Out-of-sample error: the calibration re-run with each table, and each chip family, left out.

In-sample error (``clusterplan validate``) measures how well the fitted efficiencies describe
the rows they were fitted on; it cannot show over-fitting. Here every fold removes one table
(or every row of one chip family) from the published rows, re-runs the whole calibration
procedure of :mod:`clusterplan.validation.calibrate` on the rest (the stage rule included, so a
family whose only table is left out takes its software stack's fit, or every family's, exactly
as a new chip would), and predicts the removed rows with the result. The error of those
predictions is what a user should expect on runs the project has never seen:

- *table left out*: a new publication (other models, other scales, another team's recipe)
  on a chip family that may have other published runs;
- *family left out*: a chip with no published runs at all (the Trainium2 / Trainium3 case).

Folds are independent and run on an executor (:mod:`clusterplan.distributed`); each worker
rebuilds the cases from the tables, so nothing unpicklable crosses processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from clusterplan.costs.compute import Efficiency
from clusterplan.distributed import Executor, LocalExecutor
from clusterplan.specs.accuracy import (
    CrossValSummary,
    FamilyErrors,
    MeanErrors,
    RowErrors,
    StageRecord,
    TableErrors,
)
from clusterplan.validation.calibrate import VALIDATION_ONLY_TABLES, Calibration, StageSource, stage_of
from clusterplan.validation.case import Case, higher_is_faster
from clusterplan.validation.harness import Result, by_table, mape, published_mfu, run_case
from clusterplan.validation.registry import all_cases
from clusterplan.validation.stacks import ALL_FAMILIES

FoldKind = Literal["table", "family", "none"]


@dataclass(frozen=True)
class Fold:
    """One refit: the rows of ``name`` (a table or a chip family) are held out; kind "none"
    holds out nothing and predicts every row (the in-sample fit)."""

    kind: FoldKind
    name: str = ""

    def holds_out(self, case: Case) -> bool:
        if self.kind == "none":
            return False
        return (case.table if self.kind == "table" else case.family) == self.name

    def predicts(self, case: Case) -> bool:
        return case.skip is None and (self.kind == "none" or self.holds_out(case))


def folds(cases: Sequence[Case]) -> list[Fold]:
    """A fold per table and per chip family that has modelled rows with a published value
    (validation-only tables included: their fold refits what the full fit fits, and predicts
    them); memory-only tables (no published speed, cases_mbridge.py) have nothing to predict."""
    rows = [c for c in cases if c.skip is None and math.isfinite(c.published)]
    tables = sorted({c.table for c in rows})
    families = sorted({c.family for c in rows})
    return [Fold("none"), *(Fold("table", t) for t in tables), *(Fold("family", f) for f in families)]


def _fixed(efficiency: Efficiency) -> Callable[[str], Efficiency]:
    return lambda _: efficiency


def predict(calibration: Calibration, cases: Sequence[Case], indices: Sequence[int]) -> list[tuple[int, float | None]]:
    """(index, prediction) of ``cases[i]`` for each of ``indices`` with ``calibration``'s
    parameters. Each row only needs the stages up to its own (a dense row never reads the
    serving parameters), so only those are fitted."""
    predictions: list[tuple[int, float | None]] = []
    for index in indices:
        case = cases[index]
        stage = stage_of(case)
        efficiency = (calibration.dense(case.family)[0] if stage == "dense"
                      else calibration.staged(stage, case.family)[0])
        predictions.append((index, run_case(case, _fixed(efficiency)).predicted))
    return predictions


def predict_held_out(cases: Sequence[Case], fold: Fold) -> list[tuple[int, float | None]]:
    """(index in ``cases``, out-of-sample prediction) of every modelled row ``fold`` holds out."""
    held = [i for i, case in enumerate(cases) if fold.predicts(case)]
    return predict(Calibration([case for case in cases if not fold.holds_out(case)]), cases, held)


FoldResult = tuple[list[tuple[int, float | None]], list["FamilyParameters"]]


def _fold_task(task: tuple[tuple[str, ...] | None, Fold]) -> FoldResult:
    """Worker entry point: rebuild the cases (closures do not pickle), then run the fold; the
    in-sample fold also says where each family's parameters came from."""
    tables, fold = task
    cases = all_cases(list(tables) if tables else None)
    calibration = Calibration([case for case in cases if not fold.holds_out(case)])
    predictions = predict(calibration, cases, [i for i, case in enumerate(cases) if fold.predicts(case)])
    return predictions, family_parameters(calibration, ALL_FAMILIES) if fold.kind == "none" else []


@dataclass(frozen=True)
class FamilyParameters:
    """How many parameters a family fits on its own rows, and where every stage came from."""

    family: str
    own_parameters: int
    own_rows: int
    stages: tuple[StageSource, ...]


@dataclass(frozen=True)
class CrossValidation:
    """In-sample results and the two kinds of out-of-sample results, row-aligned."""

    in_sample: list[Result]
    table_out: list[Result]
    family_out: list[Result]
    families: list[FamilyParameters]

    def table_mape(self, which: Literal["in_sample", "table_out", "family_out"]) -> dict[str, float]:
        return {name: mape(rows) for name, rows in by_table(getattr(self, which)).items()}

    def family_mape(self, which: Literal["in_sample", "table_out", "family_out"]) -> dict[str, float]:
        """MAPE per chip family over its fitted tables' rows (validation-only tables measure
        other software stacks and are reported per table)."""
        groups: dict[str, list[Result]] = {}
        for result in getattr(self, which):
            if result.case.family and result.case.table not in VALIDATION_ONLY_TABLES:
                groups.setdefault(result.case.family, []).append(result)
        return {name: mape(rows) for name, rows in sorted(groups.items())}


def family_parameters(calibration: Calibration, families: Sequence[str]) -> list[FamilyParameters]:
    out = []
    for family in families:
        stages = calibration.sources(family)
        own_rows = sum(s.rows for s in stages if s.own(family))
        out.append(FamilyParameters(family, calibration.parameters(family), own_rows, stages))
    return out


def cross_validate(tables: Sequence[str] | None = None, executor: Executor | None = None,
                   on_fold: Callable[[Fold], None] | None = None) -> CrossValidation:
    """Every fold of :func:`folds` over the given tables (all by default); ``on_fold`` is called
    as each fold finishes (progress)."""
    key = tuple(tables) if tables else None
    cases = all_cases(list(tables) if tables else None)
    plan = folds(cases)
    # In sample is the "none" fold: the same procedure on every row (what `calibrate` ships),
    # not the catalog's efficiency.yaml, so that the three columns compare one procedure.
    predicted: dict[FoldKind, dict[int, float | None]] = {"none": {}, "table": {}, "family": {}}
    families: list[FamilyParameters] = []
    with executor or LocalExecutor(1) as pool:
        for index, (predictions, sources) in pool.map_unordered(_fold_task, [(key, fold) for fold in plan]):
            predicted[plan[index].kind].update(predictions)
            families += sources
            if on_fold is not None:
                on_fold(plan[index])

    def results(kind: FoldKind) -> list[Result]:
        return [Result(case, predicted[kind].get(i)) for i, case in enumerate(cases)]

    return CrossValidation(in_sample=results("none"), table_out=results("table"), family_out=results("family"),
                           families=families)



# ---- the typed summary (what `calibrate` stores and `validate` shows) ----------------------
def _pct(value: float | None) -> float | None:
    """A percentage for JSON/YAML: rounded, and None where nothing was modelled."""
    return None if value is None or not math.isfinite(value) else round(value, 2)


def summarise(validation: CrossValidation) -> CrossValSummary:
    in_sample, table_out, family_out = (validation.table_mape(w) for w in ("in_sample", "table_out", "family_out"))
    counts = {name: sum(r.error is not None for r in rows) for name, rows in by_table(validation.in_sample).items()}
    tables = {name: TableErrors(rows=counts[name], mape_pct=_pct(in_sample[name]),
                                mape_out_of_sample_pct=_pct(table_out[name]),
                                mape_family_out_pct=_pct(family_out[name])) for name in in_sample}
    fam_in, fam_out = validation.family_mape("in_sample"), validation.family_mape("family_out")
    families = {p.family: FamilyErrors(
        own_parameters=p.own_parameters, own_rows=p.own_rows, mape_pct=_pct(fam_in.get(p.family)),
        mape_family_out_pct=_pct(fam_out.get(p.family)),
        stages=[StageRecord(stage=s.stage, parameters=list(s.parameters), rows=s.rows, tables=list(s.tables),
                            families=list(s.families)) for s in p.stages]) for p in validation.families}

    def signed(result: Result) -> float | None:
        return None if result.error is None else _pct(100 * result.error)

    def chips(case: Case) -> int | None:
        return None if case.plan is None else max(case.plan.chips // case.devices_per_chip, 1)

    def mfu(case: Case) -> float | None:
        value = published_mfu(case)
        return None if value is None else round(value, 4)

    rows = [RowErrors(table=a.case.table, label=a.case.label, family=a.case.family, stage=stage_of(a.case),
                      chips=chips(a.case), higher_is_faster=higher_is_faster(a.case.metric), error_pct=signed(a),
                      error_out_of_sample_pct=signed(b), error_family_out_pct=signed(c),
                      precision=None if a.case.plan is None else a.case.plan.precision, mfu_published=mfu(a.case))
            for a, b, c in zip(validation.in_sample, validation.table_out, validation.family_out, strict=True)
            if a.error is not None]
    return CrossValSummary(tables=tables, families=families, rows=rows)


#: Tables no mean includes: MLPerf's wide-EP DeepSeek-R1 rows, validation only, are 2.5-4.7x off
#: (a regression bound, docs/serving.md); a mean that held them would say nothing else.
MEAN_EXCLUDED_TABLES = frozenset({"inference_wide_ep"})
MEAN_STAGES: tuple[Literal["dense", "MoE", "serving"], ...] = ("dense", "MoE", "serving")


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None and not math.isnan(v)]
    return round(sum(known) / len(known), 2) if known else None


def summary_means(summary: CrossValSummary, tables: Collection[str] | None = None) -> list[MeanErrors]:
    """Mean absolute % errors of ``summary`` (over ``tables``, default all; never
    :data:`MEAN_EXCLUDED_TABLES`) two ways: over tables, each table's MAPE once, so that every
    source counts the same; and over rows, each published run once, for all rows and per
    calibration stage. The two can disagree: in round 19 the table mean out of sample rose 0.3
    points on two torchtitan rows while the row mean fell 1.2 (docs/validation.md)."""
    names = [name for name in summary.tables if name not in MEAN_EXCLUDED_TABLES
             and (tables is None or name in tables) and summary.tables[name].mape_pct is not None]
    errors = [summary.tables[name] for name in names]
    means = [MeanErrors(over="tables", stage="all", count=len(errors),
                        mape_pct=_mean([e.mape_pct for e in errors]),
                        mape_out_of_sample_pct=_mean([e.mape_out_of_sample_pct for e in errors]),
                        mape_family_out_pct=_mean([e.mape_family_out_pct for e in errors]))]
    rows = [row for row in summary.rows if row.table in names and row.error_pct is not None]

    def absolute(values: Sequence[float | None]) -> list[float | None]:
        return [None if v is None else abs(v) for v in values]

    for stage in ("all", *MEAN_STAGES):
        chosen = [row for row in rows if stage == "all" or row.stage == stage]
        if chosen or stage == "all":
            means.append(MeanErrors(
                over="rows", stage=stage, count=len(chosen),
                mape_pct=_mean(absolute([r.error_pct for r in chosen])),
                mape_out_of_sample_pct=_mean(absolute([r.error_out_of_sample_pct for r in chosen])),
                mape_family_out_pct=_mean(absolute([r.error_family_out_pct for r in chosen]))))
    return means
