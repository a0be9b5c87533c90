"""`clusterplan sweep`: a sweep file's points searched, written to Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import TaskID

import clusterplan.cli._common as _common
from clusterplan.api.sweep import DEFAULT_MAX_POINTS
from clusterplan.cli._common import (
    _print_paths,
    clean_errors,
    emit_json,
    output_file,
    write_or_refuse,
)


# ---- sweep ---------------------------------------------------------------------------------
@clean_errors
def sweep(
    sweep_file: Annotated[Path, typer.Argument(metavar="FILE.yaml", help="sweep file (see docs/sweep.md)")],
    output: Annotated[
        Path | None, typer.Option(help="Parquet file to write (default: <stem>.parquet next to the sweep file)")
    ] = None,
    executor: Annotated[str, typer.Option(help="local (process pool on this machine) | ray")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (default: start a local Ray instance)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="local: worker processes; ray: CPUs of the local instance (default: all)")
    ] = None,
    max_points: Annotated[int, typer.Option(
        help="refuse a sweep of more points than this (its axes' product)")] = DEFAULT_MAX_POINTS,
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
) -> None:
    """Search every point of a sweep file; write one row per point to Parquet and summarise."""
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from clusterplan.api.sweep import SweepRequest, prepare
    from clusterplan.api.sweep import answer as sweep_answer
    from clusterplan.report.sweep import sweep_table
    from clusterplan.sweep import write_parquet

    request = SweepRequest(sweep_file=sweep_file, output=output, executor=executor, ray_address=ray_address,
                           workers=workers, max_points=max_points)
    job = prepare(request)  # the executor's options and every point validated before anything runs
    target = output_file(request.output_path, "--output")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    tasks: list[TaskID] = []

    def started(description: str, points: int) -> None:  # a Ray cluster joined (or refused) first
        progress.start()
        tasks.append(progress.add_task(escape(f"sweep on {description}"), total=points))

    try:
        answered = sweep_answer(request, job, on_start=started, on_result=lambda: progress.advance(tasks[0]))
    finally:
        if tasks:  # started: a refusal before it prints nothing but its line
            progress.stop()
    write_or_refuse("--output", target, lambda: write_parquet(answered.rows, target))
    if as_json:
        emit_json(answered.record)
        return
    sweep_table(_common.console, answered.axes, answered.rows)
    _print_paths(f"wrote {len(answered.rows)} rows to", str(target))
