"""How close are the estimates to the published runs? (``clusterplan validate``) And the fit
behind them: each chip family's kernel efficiencies, cross-validated (``clusterplan calibrate``).

The CLI parses, calls these and presents: :func:`predict` (every row of the tables, with its own
plan), :func:`cross_validation` (the refits with each table and family left out) or the errors
the last calibration stored, :func:`validation_answer` (the ``--json`` record);
:func:`fit_efficiencies` and :func:`calibration_answer` (the two files ``calibrate`` writes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import field_validator

from clusterplan.api._base import Answer, Request
from clusterplan.errors import SpecError
from clusterplan.specs.accuracy import CrossValSummary, RowErrors
from clusterplan.validation.bands import COVERAGE, BandCheck, band_checks
from clusterplan.validation.harness import (
    Result,
    by_table,
    fits_fraction,
    fits_fraction_at_defaults,
    mape,
    mape_at_defaults,
)

#: The catalog folder: where ``calibrate`` writes efficiency.yaml and crossval.yaml by default.
CATALOG_DIR = Path(__file__).parent.parent / "catalog"
EFFICIENCY_FILE = "efficiency.yaml"

COMPUTED_NOW = "computed now (--cross-validate)"
STORED = "stored by the last `clusterplan calibrate` (recompute: --cross-validate)"


def _workers(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise SpecError("--workers", value, "must be >= 1")
    return value


class ValidateRequest(Request):
    """The tables to predict (all when None) and where the out-of-sample errors come from: the
    last calibration's (stored) or refitted now (``cross_validate``, on ``workers`` processes)."""

    tables: tuple[str, ...] | None = None
    cross_validate: bool = False
    workers: int | None = None

    @field_validator("tables")
    @classmethod
    def _known(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from clusterplan.validation.registry import known_tables

        tables = known_tables()
        for name in value or ():
            if name not in tables:
                raise SpecError("--table", name, f"unknown table (known: {', '.join(tables)})")
        return value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | None) -> int | None:
        return _workers(value)


class ValidateAnswer(Answer):
    """Every row predicted (``results``), the cross-validated errors and where they come from;
    ``record``: the ``validate --json`` object."""

    results: tuple[Result, ...]
    crossval: CrossValSummary | None
    crossval_origin: str
    #: the error bands checked on publications they had not seen (validation/bands.py: band_checks)
    band_checks: tuple[BandCheck, ...] = ()


def predict(request: ValidateRequest, progress: Callable[[str], None] | None = None) -> tuple[Result, ...]:
    """Every row of the request's tables predicted with its own plan; ``progress(text)`` is told
    each table."""
    from clusterplan.validation.harness import run
    from clusterplan.validation.registry import all_cases, known_tables

    step = progress or (lambda _text: None)
    results: list[Result] = []
    for name in request.tables or known_tables():
        step(f"predicting the rows of {name}")
        results += run(all_cases([name]), at_defaults=True)
    return tuple(results)


def cross_validation(tables: Sequence[str] | None, workers: int | None,
                     on_start: Callable[[int], None] | None = None,
                     on_fold: Callable[[str | None], None] | None = None) -> CrossValSummary:
    """The calibration refitted with each table, and each chip family, left out (every fold, on
    ``workers`` local processes); ``on_start(folds)`` is told the number of folds first, and
    ``on_fold(name)`` each fold left out as it finishes (None: the fold that leaves nothing out)."""
    from clusterplan.distributed import LocalExecutor
    from clusterplan.validation.crossval import cross_validate, folds, summarise
    from clusterplan.validation.registry import all_cases

    names = list(tables) if tables is not None else None
    if on_start is not None:
        on_start(len(folds(all_cases(names))))
    done = (lambda fold: on_fold(fold.name)) if on_fold is not None else None
    return summarise(cross_validate(names, LocalExecutor(workers), on_fold=done))


def stored_crossval() -> CrossValSummary | None:
    """The cross-validated errors the last ``calibrate`` stored (crossval.yaml), if any."""
    from clusterplan.catalog.loader import load_crossval

    return load_crossval()


def _json_fraction(value: float) -> float | None:
    """Serving tables have no memory test: null in JSON rather than NaN."""
    return None if math.isnan(value) else value


def _row_out_of_sample(row: RowErrors | None) -> dict[str, float | None]:
    return {"error_out_of_sample_pct": row.error_out_of_sample_pct if row else None,
            "error_family_out_pct": row.error_family_out_pct if row else None}


def validation_records(results: Sequence[Result], crossval: CrossValSummary | None = None,
                       crossval_origin: str = "", checks: Sequence[BandCheck] = ()) -> dict[str, Any]:
    """The --json record: per table the in-sample MAPE of the shipped fit and, with a
    cross-validation, the out-of-sample MAPEs and the error bands' coverage of tables left out
    (``checks``); per row the same errors."""
    tables: dict[str, Any] = {}
    out_of_sample = {(row.table, row.label): row for row in crossval.rows} if crossval else {}
    for name, rows in by_table(results).items():
        modelled = [r for r in rows if r.error is not None]
        errors = crossval.tables.get(name) if crossval else None
        tables[name] = {
            "mape_pct": mape(rows),
            "mape_out_of_sample_pct": errors.mape_out_of_sample_pct if errors else None,
            "mape_family_out_pct": errors.mape_family_out_pct if errors else None,
            "mape_at_defaults_pct": mape_at_defaults(rows),
            "fits_fraction": _json_fraction(fits_fraction(rows)),
            "fits_fraction_at_defaults": _json_fraction(fits_fraction_at_defaults(rows)),
            "max_abs_error_pct": max((100 * abs(r.error) for r in modelled if r.error is not None), default=math.nan),
            "rows_modelled": len(modelled),
            "rows_skipped": len(rows) - len(modelled),
            "rows": [{
                "label": r.case.label, "metric": r.case.metric, "published": r.case.published,
                "predicted": r.predicted, "error_pct": None if r.error is None else 100 * r.error,
                "skipped": r.case.skip, "assumptions": list(r.case.assumptions),
                "memory_bytes_per_chip": r.memory_bytes, "fits": r.fits,
                "fits_at_defaults": r.fits_at_defaults,
                "predicted_at_defaults": r.predicted if r.predicted_at_defaults is None else r.predicted_at_defaults,
                "error_at_defaults_pct": None if r.error_at_defaults is None else 100 * r.error_at_defaults,
                "recipe_fields": list(r.case.recipe_fields),
                "source": r.case.source,
                **_row_out_of_sample(out_of_sample.get((name, r.case.label))),
            } for r in rows],
        }
    record: dict[str, Any] = {"tables": tables}
    if crossval is not None:
        from clusterplan.validation.crossval import summary_means

        record["cross_validation"] = crossval_origin
        record["means"] = [mean.model_dump(mode="json") for mean in summary_means(crossval, set(tables))]
        record["families"] = {name: family.model_dump(mode="json") for name, family in crossval.families.items()}
        record["band_coverage"] = {"nominal": COVERAGE, "checks": [asdict(check) for check in checks]}
    return record


def validation_answer(results: Sequence[Result], crossval: CrossValSummary | None, origin: str) -> ValidateAnswer:
    """The answer of predicted ``results`` and their cross-validated errors (from ``origin``),
    with the error bands checked on the tables they were not drawn from (about 3 s)."""
    checks = band_checks(crossval) if crossval is not None else ()
    return ValidateAnswer(record=validation_records(results, crossval, origin, checks), results=tuple(results),
                          crossval=crossval, crossval_origin=origin, band_checks=checks)


def answer(request: ValidateRequest, progress: Callable[[str], None] | None = None,
           on_start: Callable[[int], None] | None = None,
           on_fold: Callable[[str | None], None] | None = None) -> ValidateAnswer:
    """Predict, then cross-validate (``request.cross_validate``) or read the stored errors."""
    results = predict(request, progress)
    if request.cross_validate:
        return validation_answer(results, cross_validation(request.tables, request.workers, on_start, on_fold),
                                 COMPUTED_NOW)
    return validation_answer(results, stored_crossval(), STORED)


# ---- calibrate ---------------------------------------------------------------------------------
class CalibrateRequest(Request):
    """Where ``calibrate`` writes (default: the catalog's efficiency.yaml and crossval.yaml) and
    on how many processes the cross-validation refits run (default: all cores)."""

    output: Path | None = None
    crossval_output: Path | None = None
    workers: int | None = None

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | None) -> int | None:
        return _workers(value)

    @property
    def efficiency_path(self) -> Path:
        return self.output or CATALOG_DIR / EFFICIENCY_FILE

    @property
    def crossval_path(self) -> Path:
        from clusterplan.catalog.loader import CROSSVAL_FILE

        return self.crossval_output or CATALOG_DIR / CROSSVAL_FILE


class CalibrateAnswer(Answer):
    """The two files' text; ``record``: the fitted efficiencies (``families``: one note each) and
    the cross-validated errors, as written."""

    efficiency_text: str
    crossval_text: str
    crossval: CrossValSummary

    @property
    def families(self) -> list[dict[str, Any]]:
        families: list[dict[str, Any]] = self.record["efficiency"]["families"]
        return families


def fit_efficiencies(progress: Callable[[str], None] | None = None) -> dict[str, object]:
    """Each chip family's kernel efficiencies fitted on its published runs (MAP fit), as the
    efficiency.yaml document; ``progress(text)`` is told each family."""
    from clusterplan.validation.calibrate import calibrate as fit
    from clusterplan.validation.calibrate import efficiency_yaml
    from clusterplan.validation.registry import all_cases
    from clusterplan.validation.stacks import ALL_FAMILIES

    step = progress or (lambda _text: None)
    calibration = fit(all_cases())
    for index, family in enumerate(ALL_FAMILIES, start=1):
        step(f"fitting {family} ({index}/{len(ALL_FAMILIES)})")
        calibration.efficiency(family)
    return efficiency_yaml(calibration)


def calibration_answer(document: dict[str, object], summary: CrossValSummary) -> CalibrateAnswer:
    """The text of efficiency.yaml (``document``) and of crossval.yaml (``summary``)."""
    import yaml

    header = ("# Physical kernel efficiencies per chip family, written by `clusterplan calibrate`\n"
              "# (MAP fit on the published rows named in fitted_on; see docs/validation.md).\n")
    efficiency_text = header + yaml.safe_dump(document, sort_keys=False, width=100)
    crossval_header = ("# Cross-validated errors of the fit in efficiency.yaml, written by `clusterplan calibrate`:\n"
                       "# each table, and each chip family, left out in turn (see docs/validation.md).\n")
    crossval_text = crossval_header + yaml.safe_dump(summary.model_dump(mode="json"), sort_keys=False, width=100)
    return CalibrateAnswer(record={"efficiency": document, "crossval": summary.model_dump(mode="json")},
                           efficiency_text=efficiency_text, crossval_text=crossval_text, crossval=summary)


def calibrate(request: CalibrateRequest, progress: Callable[[str], None] | None = None,
              on_start: Callable[[int], None] | None = None,
              on_fold: Callable[[str | None], None] | None = None) -> CalibrateAnswer:
    """Fit, then cross-validate every table and family: the two files' text (nothing written)."""
    document = fit_efficiencies(progress)
    return calibration_answer(document, cross_validation(None, request.workers, on_start, on_fold))
