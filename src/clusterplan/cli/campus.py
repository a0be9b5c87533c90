"""`clusterplan campus`: the campus hour by hour."""

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


# ---- campus --------------------------------------------------------------------------------
@clean_errors
def campus(
    scenario: Annotated[str, typer.Argument(help="built-in scenario (rainier) or YAML")] = "rainier",
    days: Annotated[int, typer.Option(help="days to simulate hour by hour (1 to 3660)")] = 7,
    policy: Annotated[str, typer.Option(help="shared, dedicated, slo-aware or all")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON: hourly, daily, summary, policies")] = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="write campus-<name>.md and .html with charts here")
    ] = None,
) -> None:
    """The campus hour by hour: serving by day, training by night, power and money by the hour,
    under each allocation policy side by side (docs/campus.md)."""
    from clusterplan.api.campus import CampusRequest
    from clusterplan.api.campus import answer as campus_answer
    from clusterplan.report.campus import campus_report, campus_table

    request = CampusRequest(scenario=scenario, days=days, policy=policy)
    if report_dir is not None:
        output_dir(report_dir, "--report-dir")
    with StepProgress("campus") as bar:
        answered = campus_answer(request, progress=bar.step)
        result = answered.result
        if report_dir is not None:
            output_dir(report_dir, "--report-dir", (f"campus-{result.scenario}.md", f"campus-{result.scenario}.html"))
            bar.step("writing the report")
        written = (write_or_refuse("--report-dir", report_dir, lambda: campus_report(result, report_dir))
                   if report_dir is not None else {})
    if as_json:
        emit_json({**answered.record, **({"report": written} if written else {})})
        return
    campus_table(_common.console, result)
    if written:
        _print_paths("report", written["html"], written["markdown"])
