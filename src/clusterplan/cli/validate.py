"""`clusterplan validate` and `clusterplan calibrate`: the published rows predicted; the fit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

import clusterplan.cli._common as _common
from clusterplan.cli._common import (
    clean_errors,
    emit_json,
    output_file,
    write_atomically,
    write_or_refuse,
)
from clusterplan.errors import SpecError
from clusterplan.report.console import StepProgress

if TYPE_CHECKING:
    from clusterplan.specs.accuracy import CrossValSummary


# ---- validate ------------------------------------------------------------------------------
@clean_errors
def validate(
    table: Annotated[list[str] | None, typer.Option("--table", help="limit to these tables")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    show_skipped: Annotated[bool, typer.Option("--skipped/--no-skipped", help="list rows not modelled")] = True,
    markdown: Annotated[bool, typer.Option("--markdown", help="print the report as Markdown")] = False,
    cross_validate: Annotated[bool, typer.Option(
        "--cross-validate", help="refit with each table, and each chip family, left out (minutes)")] = False,
    workers: Annotated[int | None, typer.Option(help="processes for --cross-validate (default: all cores)")] = None,
) -> None:
    """Predict every published row with its own plan; print errors and MAPE per table, out of
    sample first (stored by the last `calibrate`, or recomputed with --cross-validate)."""
    from clusterplan.catalog.loader import load_crossval
    from clusterplan.report.tables import validation_report
    from clusterplan.validation.harness import run
    from clusterplan.validation.registry import all_cases, known_tables

    tables = known_tables()
    for name in table or []:
        if name not in tables:
            raise SpecError("--table", name, f"unknown table (known: {', '.join(tables)})")
    if workers is not None and workers < 1:
        raise SpecError("--workers", workers, "must be >= 1")
    results = []
    with StepProgress("validate") as bar:
        for name in table or tables:
            bar.step(f"predicting the rows of {name}")
            results += run(all_cases([name]))
    crossval: CrossValSummary | None
    if cross_validate:
        crossval = _cross_validate(table, workers)
        origin = "computed now (--cross-validate)"
    else:
        crossval = load_crossval()
        origin = "stored by the last `clusterplan calibrate` (recompute: --cross-validate)"
    if markdown:
        from clusterplan.report.tables import validation_markdown

        sys.stdout.write(validation_markdown(results, crossval))
        return
    validation_report(_common.console, results, as_json=as_json, show_skipped=show_skipped, emit=emit_json,
                      crossval=crossval, crossval_origin=origin)


def _cross_validate(tables: list[str] | None, workers: int | None) -> CrossValSummary:
    """Every cross-validation fold, with progress on stderr."""
    from clusterplan.distributed import LocalExecutor
    from clusterplan.validation.crossval import cross_validate, folds, summarise
    from clusterplan.validation.registry import all_cases

    total = len(folds(all_cases(tables)))
    with StepProgress("cross-validation") as bar:
        bar.step(f"refitting with each of {total} folds left out")

        def done(fold: Any) -> None:
            bar.step(f"refitted without {fold.name or 'nothing'} ({bar.steps}/{total})")

        return summarise(cross_validate(tables, LocalExecutor(workers), on_fold=done))


# ---- calibrate -----------------------------------------------------------------------------
@clean_errors
def calibrate(
    output: Annotated[Path | None, typer.Option(help="write here instead of the catalog's efficiency.yaml")] = None,
    crossval_output: Annotated[Path | None, typer.Option(
        help="write the cross-validated errors here instead of the catalog's crossval.yaml")] = None,
    workers: Annotated[int | None, typer.Option(help="processes for the refits (default: all cores)")] = None,
) -> None:
    """Fit each chip family's kernel efficiencies on its published runs (writes efficiency.yaml)
    and cross-validate the fit (writes crossval.yaml: errors with each table and family left out)."""
    import yaml

    from clusterplan.catalog.loader import CROSSVAL_FILE
    from clusterplan.validation.calibrate import ALL_FAMILIES, efficiency_yaml
    from clusterplan.validation.calibrate import calibrate as fit
    from clusterplan.validation.registry import all_cases

    if workers is not None and workers < 1:
        raise SpecError("--workers", workers, "must be >= 1")
    catalog = Path(__file__).parent.parent / "catalog"
    target = output_file(output or catalog / "efficiency.yaml", "--output")  # before a minute of fitting
    crossval_target = output_file(crossval_output or catalog / CROSSVAL_FILE, "--crossval-output")
    calibration = fit(all_cases())
    with StepProgress("calibrate") as bar:
        for index, family in enumerate(ALL_FAMILIES, start=1):
            bar.step(f"fitting {family} ({index}/{len(ALL_FAMILIES)})")
            calibration.efficiency(family)
    document = efficiency_yaml(calibration)
    summary = _cross_validate(None, workers)
    # Both files are written only once both are computed: nothing half-written.
    header = ("# Physical kernel efficiencies per chip family, written by `clusterplan calibrate`\n"
              "# (MAP fit on the published rows named in fitted_on; see docs/validation.md).\n")
    efficiency_text = header + yaml.safe_dump(document, sort_keys=False, width=100)
    crossval_header = ("# Cross-validated errors of the fit in efficiency.yaml, written by `clusterplan calibrate`:\n"
                       "# each table, and each chip family, left out in turn (see docs/validation.md).\n")
    crossval_text = crossval_header + yaml.safe_dump(summary.model_dump(mode="json"), sort_keys=False, width=100)
    write_or_refuse("--output", target, lambda: write_atomically(target, efficiency_text))
    write_or_refuse("--crossval-output", crossval_target, lambda: write_atomically(crossval_target, crossval_text))
    families: list[dict[str, Any]] = document["families"]  # type: ignore[assignment]
    for entry in families:
        _common.console.print(f"[bold]{entry['family']}[/]: {entry['note']}")
    for name, errors in summary.tables.items():
        _common.console.print(f"{name}: in sample {errors.mape_pct} %, out of sample "
                              f"{errors.mape_out_of_sample_pct} %, family out {errors.mape_family_out_pct} %")
    _common.console.print(f"wrote {target} and {crossval_target}")
