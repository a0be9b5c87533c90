"""`clusterplan validate` and `clusterplan calibrate`: the published rows predicted; the fit."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

import clusterplan.cli._common as _common
from clusterplan.cli._common import (
    clean_errors,
    emit_json,
    output_file,
    write_atomically,
    write_or_refuse,
)
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
    from clusterplan.api.validate import COMPUTED_NOW, STORED, ValidateRequest, predict, stored_crossval
    from clusterplan.api.validate import validation_answer as answer
    from clusterplan.report.tables import validation_report

    request = ValidateRequest(tables=table, cross_validate=cross_validate, workers=workers)
    with StepProgress("validate") as bar:
        results = predict(request, progress=bar.step)
        if not request.cross_validate:
            bar.step("checking the error bands on the tables they were not drawn from")
            answered = answer(results, stored_crossval(), STORED)
    if request.cross_validate:
        answered = answer(results, _cross_validate(request.tables, request.workers), COMPUTED_NOW)
    if markdown:
        from clusterplan.report.tables import validation_markdown

        sys.stdout.write(validation_markdown(answered.results, answered.crossval, answered.band_checks))
        return
    if as_json:
        emit_json(answered.record)
        return
    validation_report(_common.console, answered.results, show_skipped=show_skipped, crossval=answered.crossval,
                      crossval_origin=answered.crossval_origin, band_checks=answered.band_checks)


def _cross_validate(tables: Sequence[str] | None, workers: int | None) -> CrossValSummary:
    """Every cross-validation fold (api/validate.py), with progress on stderr."""
    from clusterplan.api.validate import cross_validation

    with StepProgress("cross-validation") as bar:
        total = 0

        def start(folds: int) -> None:
            nonlocal total
            total = folds
            bar.step(f"refitting with each of {total} folds left out")

        def done(name: str | None) -> None:
            bar.step(f"refitted without {name or 'nothing'} ({bar.steps}/{total})")

        return cross_validation(tables, workers, on_start=start, on_fold=done)


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
    from clusterplan.api.validate import CalibrateRequest, calibration_answer, fit_efficiencies

    request = CalibrateRequest(output=output, crossval_output=crossval_output, workers=workers)
    target = output_file(request.efficiency_path, "--output")  # before a minute of fitting
    crossval_target = output_file(request.crossval_path, "--crossval-output")
    with StepProgress("calibrate") as bar:
        document = fit_efficiencies(progress=bar.step)
    answered = calibration_answer(document, _cross_validate(None, request.workers))
    # Both files are written only once both are computed: nothing half-written.
    write_or_refuse("--output", target, lambda: write_atomically(target, answered.efficiency_text))
    write_or_refuse("--crossval-output", crossval_target,
                    lambda: write_atomically(crossval_target, answered.crossval_text))
    for entry in answered.families:
        _common.console.print(f"[bold]{entry['family']}[/]: {entry['note']}")
    for name, errors in answered.crossval.tables.items():
        _common.console.print(f"{name}: in sample {errors.mape_pct} %, out of sample "
                              f"{errors.mape_out_of_sample_pct} %, family out {errors.mape_family_out_pct} %")
    _common.console.print(f"wrote {target} and {crossval_target}")
