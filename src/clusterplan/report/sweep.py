"""`clusterplan sweep`: the best plan per point as a terminal table (the rows `api/sweep.py`
answers; the Parquet file is written by `sweep.write_parquet`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from clusterplan import units

__all__ = ["sweep_plan", "sweep_table"]


def sweep_plan(row: dict[str, Any]) -> str:
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


def sweep_table(out: Console, axes: list[str], rows: list[dict[str, Any]]) -> None:
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
                   else escape(str(row[n])) for n in shown], sweep_plan(row), steps[index],
                 f"{100 * row['mfu']:.1f} %" if ok else "-", memory[index]]
        if tokens:
            cells.append(train[index])
        table.add_row(*cells)
    out.print(table)
