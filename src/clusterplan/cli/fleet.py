"""`clusterplan fleet`: capex per quarter -> chips, MW, EFLOP/s over time."""

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
    print_overrides,
    request_or_refuse,
    write_or_refuse,
)
from clusterplan.report.console import StepProgress


# ---- fleet ---------------------------------------------------------------------------------
@clean_errors
def fleet(
    scenario: Annotated[
        str, typer.Argument(help="built-in scenario (amazon-2025, amazon-2026, hyperscalers-2025, rainier) or YAML")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON: the scenario, a record per quarter")] = False,
    report_dir: Annotated[
        Path | None, typer.Option(help="write fleet-<name>.md and .html with charts here")
    ] = None,
    runs: Annotated[bool, typer.Option("--runs/--no-runs", help="search the reference run each quarter")] = True,
    capex_scale: Annotated[float | None, typer.Option(
        help="what-if: every quarter's capex times this (1: the scenario's)")] = None,
    ai_share: Annotated[float | None, typer.Option(
        help="what-if: every company's AI share of capex, in (0, 1]")] = None,
    power_envelope_w: Annotated[str | None, typer.Option(
        "--power-envelope-w", "--power-envelope",
        help="what-if: every quarter's facility power cap, e.g. 2.2GW")] = None,
    capex_to_online_quarters: Annotated[int | None, typer.Option(
        help="what-if: quarters from capex to chips online, 0-16")] = None,
) -> None:
    """Capex per quarter and hardware mix -> chips, MW, EFLOP/s, capex, depreciation over time.
    The what-if options change the scenario as the web planner's Fleet form does (docs/web.md)."""
    from clusterplan.api.fleet import FleetRequest
    from clusterplan.api.fleet import answer as fleet_answer
    from clusterplan.report.fleet import backtest_table, fleet_report, fleet_table

    request = request_or_refuse(FleetRequest, scenario=scenario, runs=runs, capex_scale=capex_scale,
                                ai_share=ai_share, power_envelope_w=power_envelope_w,
                                capex_to_online_quarters=capex_to_online_quarters)
    if report_dir is not None:
        output_dir(report_dir, "--report-dir")
    with StepProgress("fleet") as bar:
        result = fleet_answer(request, progress=bar.step)
        name, records = result.scenario, result.record["quarters"]
        if report_dir is not None:
            output_dir(report_dir, "--report-dir", (f"fleet-{name}.md", f"fleet-{name}.html"))
            bar.step("writing the report")
        written = (write_or_refuse("--report-dir", report_dir, lambda: fleet_report(name, records, report_dir))
                   if report_dir is not None else {})
    if as_json:
        emit_json({**result.record, **({"report": written} if written else {})})
        return
    print_overrides(result.record)
    fleet_table(_common.console, name, records)
    if "backtest" in result.record:
        backtest_table(_common.console, result.record["backtest"])
    if written:
        _print_paths("report", written["html"], written["markdown"])
