"""``clusterplan campus`` in the terminal (tables that fit 80 columns) and as a Markdown + HTML
report (``report/documents.py``: a day-in-the-life chart of chips and MW, a policy comparison)."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clusterplan import units
from clusterplan.campus.run import CampusResult, PolicyResult
from clusterplan.report.documents import Report, bar_chart, line_chart, write_report


def _money(value: float, digits: int = 2) -> str:
    return "-" if not math.isfinite(value) else f"${value:,.{digits}f}"


def _tokens(value: float) -> str:
    unit, cells = units.format_column([value], "count")
    return f"{cells[0]} {unit}".strip()


def comparison_rows(result: CampusResult) -> tuple[list[str], list[list[str]]]:
    """The policy comparison: one row per policy (per day figures are means over the run)."""
    summaries = [p.summary for p in result.policies]
    unit, trained = units.format_column([s.training_tokens / (s.hours / 24.0) for s in summaries], "count")
    header = ["policy", f"trained/day ({unit}tok)", "SLO met", "idle", "MWh/day", "$/M served", "$/B trained"]
    rows = []
    for index, s in enumerate(summaries):
        record = s.record()
        rows.append([result.policies[index].run.policy, trained[index], f"{100 * s.slo_attainment:.2f} %",
                     f"{100 * record['idle_share']:.1f} %", f"{s.energy_mwh / (s.hours / 24.0):,.0f}",
                     _money(s.usd_per_million_served_tokens), _money(s.usd_per_billion_trained_tokens, 0)])
    return header, rows


def _day_rows(policy: PolicyResult, day: int = 0) -> tuple[list[str], list[list[str]]]:
    hours = policy.hourly()[day * 24:(day + 1) * 24]
    unit, tokens = units.format_column([h["training_tokens"] for h in hours], "count")
    header = ["hour", "serving chips", "training chips", "idle chips", "facility MW",
              f"trained tok ({unit})" if unit else "trained tok", "SLO met"]
    rows = [[f"{h['hour_of_day']:02d}:00", f"{h['serving_chips']:,}", f"{h['training_chips']:,}",
             f"{h['idle_chips']:,}", f"{h['facility_mw']:,.0f}", tokens[i], f"{100 * h['slo_attainment']:.1f} %"]
            for i, h in enumerate(hours)]
    return header, rows


def _table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for index, column in enumerate(header):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index == 0)
    for row in rows:
        table.add_row(*row)
    return table


def campus_table(console: Console, result: CampusResult) -> None:
    """What the terminal shows: the campus, what was sized, the policies side by side, the first
    policy's first day hour by hour."""
    envelope = f"{result.envelope_w / 1e6:,.0f} MW envelope" if math.isfinite(result.envelope_w) else "no envelope"
    console.print(f"[bold]campus {result.scenario}[/]: {result.campus_chips:,} x {result.chip} "
                  f"({result.system}), {envelope}; {result.days} days hour by hour", highlight=False)
    for s in result.sizing.serving:
        console.print(f"serving {s.name}: {s.deployment}, {s.chips_per_replica} chips per replica, "
                      f"{s.output_tokens_per_s_per_replica:,.0f} output tok/s per replica at p99 TTFT "
                      f"{s.slo_ttft_s * 1000:g} ms / TPOT {s.slo_tpot_s * 1000:g} ms", highlight=False)
    for t in result.sizing.training:
        sizes = ", ".join(f"{lv.chips:,} ({lv.tokens_per_s / 1e6:,.1f} M tok/s, goodput {100 * lv.goodput:.0f} %)"
                          for lv in t.levels)
        console.print(f"training {t.name} (priority {t.priority}) sizes: {sizes}; a resize costs "
                      f"{t.checkpoint_s + t.restore_s + t.levels[-1].restart_s:,.0f} s", highlight=False)
    header, rows = comparison_rows(result)
    console.print(_table(f"policies over {result.days} days (means per day)", header, rows))
    first = result.policies[0]
    header, rows = _day_rows(first)
    console.print(_table(f"a day in the life: {first.run.policy}, day 1 (Monday)", header, rows))
    console.print(f"sized in {result.setup_s:.1f} s, simulated in {result.simulate_s:.3f} s", highlight=False)


def campus_report(result: CampusResult, directory: Path) -> dict[str, str]:
    """``campus-<name>.md`` and ``.html``: summary figures, assumptions, the comparison, a
    day-in-the-life chart of chips and MW per policy, the run's daily training tokens."""
    report = Report(f"Campus simulation: {result.scenario}",
                    subtitle=f"{result.campus_chips:,} x {result.chip}, {result.days} days hour by hour")
    for p in result.policies:
        s = p.summary
        report.quote(f"{p.run.policy}: trained per day", _tokens(s.training_tokens / (s.hours / 24.0)) + " tokens",
                     f"SLO met for {100 * s.slo_attainment:.2f} % of served tokens; "
                     f"{100 * s.record()['idle_share']:.1f} % of chip-hours idle; "
                     f"{_money(s.usd_per_million_served_tokens)} per M served tokens")
    report.assumptions += result.record()["assumptions"]
    header, rows = comparison_rows(result)
    table = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    report.add("Policies side by side", "\n".join(table),
               bar_chart("Training tokens per day by policy", [p.run.policy for p in result.policies],
                         [p.summary.training_tokens / (p.summary.hours / 24.0) / 1e9 for p in result.policies],
                         "training tokens per day (billions)"), "policies")
    hours = [str(h) for h in range(24)]
    for p in result.policies:
        run = p.run
        chips = {"serving": [float(v) / 1e3 for v in run.serving_chips.sum(axis=0)[:24]],
                 "training": [float(v) / 1e3 for v in run.training_chips.sum(axis=0)[:24]],
                 "idle": [float(v) / 1e3 for v in run.idle_chips[:24]],
                 "facility MW": [float(v) / 1e6 for v in run.facility_w[:24]]}
        header, rows = _day_rows(p)
        lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        report.add(f"A day in the life: {run.policy}", "Day 1 (Monday), campus local time: chips (thousands) by use "
                   "and facility MW.\n\n" + "\n".join(lines),
                   line_chart(f"Day 1 under {run.policy}: chips (thousands) and facility MW", hours, chips,
                              "chips (thousands) / MW", "hour of day (local)"), f"day-{run.policy}")
    days = [str(d + 1) for d in range(result.days)]
    report.add("Training tokens day by day", "Tokens trained each day, all jobs, by policy.",
               line_chart("Training tokens per day", days,
                          {p.run.policy: [d.training_tokens / 1e9 for d in p.days] for p in result.policies},
                          "training tokens (billions)", "day"), "daily")
    return write_report(report, directory, f"campus-{result.scenario}")
