"""`clusterplan sweep`: a sweep file's points searched, written to Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table

import clusterplan.cli._common as _common
from clusterplan import units
from clusterplan.api.sweep import DEFAULT_MAX_POINTS
from clusterplan.cli._common import (
    _print_paths,
    clean_errors,
    emit_json,
    output_file,
    write_or_refuse,
)


# ---- sweep ---------------------------------------------------------------------------------
def _sweep_plan(row: dict[str, Any]) -> str:
    """The best plan of a sweep row in one short string (``TP4 PP1 DP16 mb1 none Z3 bf16``)."""
    if row["status"] != "ok":
        return "[red]no plan fits[/]"
    parts = [f"TP{row['tp']}", f"PP{row['pp']}"] + [f"{name.upper()}{row[name]}" for name in ("vp", "cp")
                                                     if row[name] > 1]
    parts += [f"DP{row['dp']}"] + ([f"EP{row['ep']}"] if row["ep"] > 1 else [])
    parts += [f"mb{row['micro_batch']}", row["recompute"], f"Z{row['zero']}", row["precision"]]
    if row["chips_used"] != row["chips"]:
        parts.append(f"on {row['chips_used']:,}")
    return " ".join(parts)


def _sweep_table(out: Console, axes: list[str], rows: list[dict[str, Any]]) -> None:
    """The best plan per sweep point; step, memory and time to train in one unit per column. Below
    120 columns, model and system share a column."""
    from rich.markup import escape

    table = Table(title=f"sweep: best plan per point ({len(rows)} points)")
    merged = out.width < 120
    shown = [*([] if merged else ["model", "system"]), "chips",
             *[name for name in axes if name not in ("model", "system", "chips")]]
    tokens = "time_to_train_s" in rows[0] if rows else False
    labels = {"seq_len": "seq", "global_batch": "batch", "precision_options": "precisions",
              "recompute_options": "recompute", "zero_options": "ZeRO", "max_micro_batch": "max mb"}
    ok_rows = [row["status"] == "ok" for row in rows]
    step_unit, steps = units.format_column([r["step_time_s"] if ok else None for r, ok in zip(rows, ok_rows,
                                                                                            strict=True)], "duration")
    _, memory = units.format_column([r["memory_bytes_per_chip"] if ok else None for r, ok in zip(rows, ok_rows,
                                                                                                strict=True)],
                                    "bytes", prefix="Gi")
    train_unit, train = units.format_column([r.get("time_to_train_s") if ok else None
                                             for r, ok in zip(rows, ok_rows, strict=True)], "duration")
    headers = ["#", *(["model on system"] if merged else []), *[labels.get(n, n) for n in shown], "best plan",
               f"step {step_unit}", "MFU", "memory GiB", *([f"to train {train_unit}"] if tokens else [])]
    for header in headers:
        table.add_column(header)
    for index, row in enumerate(rows):
        ok = ok_rows[index]
        cells = [str(row["point"]), *([escape(f"{row['model']} on {row['system']}")] if merged else []),
                 *[f"{row[n]:,}" if isinstance(row[n], int) and not isinstance(row[n], bool)
                   else escape(str(row[n])) for n in shown], _sweep_plan(row), steps[index],
                 f"{100 * row['mfu']:.1f} %" if ok else "-", memory[index]]
        if tokens:
            cells.append(train[index])
        table.add_row(*cells)
    out.print(table)


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
    _sweep_table(_common.console, answered.axes, answered.rows)
    _print_paths(f"wrote {len(answered.rows)} rows to", str(target))
