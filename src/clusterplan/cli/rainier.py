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
    print_overrides,
    request_or_refuse,
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
    chips: Annotated[int | None, typer.Option(
        help="what-if: the cluster's chips, one stage unless --growth (default: the scenario's)")] = None,
    growth: Annotated[str | None, typer.Option(
        help="what-if: the growth stages' chips, comma-separated, e.g. 500k,1M")] = None,
    tokens: Annotated[str | None, typer.Option(help="what-if: the training job's tokens, e.g. 15T")] = None,
    demand: Annotated[str | None, typer.Option(help="what-if: serving demand, output tokens/s, e.g. 10M")] = None,
    slo_ttft: Annotated[str | None, typer.Option(help="what-if: serving p99 TTFT, e.g. 3s (bare: ms)")] = None,
    slo_tpot: Annotated[str | None, typer.Option(help="what-if: serving p99 TPOT, e.g. 60ms (bare: ms)")] = None,
    recovery: Annotated[str | None, typer.Option(help="what-if: failure recovery: spares | wait | elastic")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="what-if: checkpointing: sync | async | memory")] = None,
    failure_scale: Annotated[float | None, typer.Option(
        help="what-if: every failure rate times this (1: the scenario's)")] = None,
    frontier_runs: Annotated[bool | None, typer.Option(
        "--frontier-runs/--no-frontier-runs", help="what-if: --no-frontier-runs leaves them out (faster)")] = None,
    serving: Annotated[bool | None, typer.Option(
        "--serving/--no-serving", help="what-if: --no-serving leaves the serving search out (faster)")] = None,
) -> None:
    """The Project Rainier report: totals, power and money, the training plan the search picks,
    frontier runs and the fleet ramp; also written as Markdown and HTML with charts. The what-if
options change the scenario as the web planner's Rainier form does (docs/web.md)."""
    from clusterplan.api.rainier import RainierRequest
    from clusterplan.api.rainier import answer as rainier_answer
    from clusterplan.report.rainier import rainier_report, rainier_summary, rainier_table

    request = request_or_refuse(RainierRequest, scenario=scenario, chips=chips, growth=growth, tokens=tokens,
                                demand=demand, slo_ttft=slo_ttft, slo_tpot=slo_tpot, recovery=recovery,
                                checkpoint=checkpoint, failure_scale=failure_scale, frontier_runs=frontier_runs,
                                serving=serving)
    if report_dir is not None:
        output_dir(report_dir, "--report-dir", ("rainier.md", "rainier.html"))
    with StepProgress("rainier") as bar:
        record = rainier_answer(request, progress=bar.step).record
        if report_dir is not None:
            bar.step("writing the report")
        written = (write_or_refuse("--report-dir", report_dir, lambda: rainier_report(record, report_dir))
                   if report_dir is not None else {})
    if written:
        record["report"] = written
    if as_json:
        emit_json(record)
    else:
        print_overrides(record)
        rainier_table(_common.console, record)
        rainier_summary(_common.console, record)
        if written:
            _print_paths("report", written["html"], written["markdown"])
