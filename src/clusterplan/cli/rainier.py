"""`clusterplan rainier`: the Project Rainier report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import clusterplan.cli._common as _common
from clusterplan.cli._common import (
    _print_paths,
    clean_errors,
    emit_json,
    output_dir,
    write_or_refuse,
)
from clusterplan.report.console import StepProgress


# ---- rainier -------------------------------------------------------------------------------
@clean_errors
def rainier(
    scenario: Annotated[str, typer.Option(help="scenario name or YAML path")] = "rainier",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="write rainier.md and rainier.html with charts here (default: out/)")
    ] = Path("out"),
) -> None:
    """The Project Rainier report: totals, power and money, the training plan the search picks,
    frontier runs and the fleet ramp; also written as Markdown and HTML with charts."""
    from clusterplan.api.rainier import RainierRequest
    from clusterplan.api.rainier import answer as rainier_answer
    from clusterplan.report.rainier import rainier_report, rainier_summary, rainier_table

    if report_dir is not None:
        output_dir(report_dir, "--report-dir", ("rainier.md", "rainier.html"))
    with StepProgress("rainier") as bar:
        record = rainier_answer(RainierRequest(scenario=scenario), progress=bar.step).record
        if report_dir is not None:
            bar.step("writing the report")
        written = (write_or_refuse("--report-dir", report_dir, lambda: rainier_report(record, report_dir))
                   if report_dir is not None else {})
    if written:
        record["report"] = written
    if as_json:
        emit_json(record)
    else:
        rainier_table(_common.console, record)
        rainier_summary(_common.console, record)
        if written:
            _print_paths("report", written["html"], written["markdown"])
