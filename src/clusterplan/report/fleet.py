"""`clusterplan fleet`: the scenario's timeline as a terminal table, JSON and reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from clusterplan import units

# The planning half lives in api/fleet.py; fleet_records stays importable from here.
from clusterplan.api.fleet import fleet_records
from clusterplan.report.documents import Report, line_chart, write_report

__all__ = ["fleet_records", "fleet_report", "fleet_table"]


def fleet_table(console: Console, name: str, records: list[dict[str, Any]]) -> None:
    """One table per company (quarters as rows), then the reference run each quarter makes
    possible; IT power and the sustained rate are shown from 100 columns up (facility power and
    peak always)."""
    wide = console.width >= 100
    for company in dict.fromkeys(r["company"] for r in records):
        rows = [r for r in records if r["company"] == company]
        lag = rows[0].get("capex_to_online_quarters", 0)
        table = Table(title=f"fleet timeline: {name}, {company}",
                      caption=f"chips online {lag} quarter{'s' if lag != 1 else ''} after the capex that buys "
                              "them; ordered: paid for, online or not")
        # At 80 columns: chips online and ordered, facility power, peak, money; IT power and the
        # sustained rate from 100 columns up.
        for column in ("quarter", "chips", "ordered", *(["IT MW"] if wide else []), "facility MW", "bf16 peak EFLOP/s",
                       *(["sustained EFLOP/s"] if wide else []), "AI capex $B (cum.)", "deprec. $B/q"):
            table.add_column(column, justify="left" if column == "quarter" else "right")
        for r in rows:
            table.add_row(r["quarter"], f"{r['chips']:,}", f"{r.get('chips_ordered', r['chips']):,}",
                          *([f"{r['it_mw']:,.0f}"] if wide else []),
                          f"{r['facility_mw']:,.0f}", f"{r['peak_bf16_eflops']:,.0f}",
                          *([f"{r['sustained_bf16_eflops']:,.0f}"] if wide else []),
                          f"{r['capex_usd_cumulative'] / 1e9:,.1f}", f"{r['depreciation_usd_quarter'] / 1e9:,.2f}")
        console.print(table)
        runs = [(r["quarter"], r["reference_run"]) for r in rows if r.get("reference_run")]
        if runs:
            console.print(f"reference run, {company}: " + "; ".join(
                f"{quarter} {run['days_to_train']:.0f} days on {run['chips']:,} chips" if run.get("possible")
                else f"{quarter} does not fit" for quarter, run in runs), highlight=False)


def fleet_report(name: str, records: list[dict[str, Any]], directory: Path) -> dict[str, str]:
    """Markdown and HTML report of a fleet timeline: where each company ends, the assumptions,
    the timeline table and charts of chips, power and capex by quarter."""
    return write_report(fleet_document(name, records), directory, f"fleet-{name}")


def fleet_document(name: str, records: list[dict[str, Any]]) -> Report:
    """The fleet report as a document (``render_html`` of it is the HTML report)."""
    companies = sorted({r["company"] for r in records})
    quarters = sorted({r["quarter"] for r in records})
    report = Report(f"Fleet scenario: {name}", subtitle=f"{len(companies)} companies, {quarters[0]} to {quarters[-1]}"
                    if quarters else "")
    for company in companies:
        end = [r for r in records if r["company"] == company][-1]
        report.quote(f"{company}, {end['quarter']}", f"{end['chips']:,} chips",
                     f"{end['facility_mw']:,.0f} MW facility; {end['peak_bf16_eflops']:,.0f} EFLOP/s dense bf16; "
                     f"${end['capex_usd_cumulative'] / 1e9:,.1f} B AI capex so far")
    report.assumptions += [
        "Capex per quarter and the hardware mix come from the scenario file (each with its source); chips follow "
        "from the catalog's all-in cost per system (servers, network, facility).",
        "Power is provisioned at TDP times the PUE of the economics catalog; EFLOP/s are dense peaks; sustained "
        "EFLOP/s apply the reference run's MFU per system (0 when the runs are not searched: --no-runs).",
        "Depreciation is straight-line over the economics catalog's lifetimes."]

    def series(key: str, scale: float = 1.0) -> dict[str, list[float]]:
        return {c: [next((r[key] / scale for r in records if r["company"] == c and r["quarter"] == q), 0.0)
                    for q in quarters] for c in companies}

    lag = records[0].get("capex_to_online_quarters", 0) if records else 0
    rows = [f"Chips come online {lag} quarter(s) after the capex that buys them (`capex_to_online_quarters`, "
            "catalog/economics.yaml); *ordered* counts the chips paid for, online or not.", "",
            "| company | quarter | chips online | chips ordered | IT MW | facility MW | peak bf16 EFLOP/s | "
            "AI capex this quarter | AI capex cumulative |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {r['company']} | {r['quarter']} | {r['chips']:,} | {r.get('chips_ordered', r['chips']):,} | "
             f"{r['it_mw']:,.0f} | {r['facility_mw']:,.0f} | {r['peak_bf16_eflops']:,.0f} | "
             f"${r['ai_capex_spent_usd'] / 1e9:,.1f} B | ${r['capex_usd_cumulative'] / 1e9:,.1f} B |" for r in records]
    report.add("Timeline", "\n".join(rows),
               line_chart("Chips deployed", quarters, series("chips", 1e3), "chips (thousands)"), "chips")
    report.add("Power", "Facility megawatts at provisioned (TDP) power.",
               line_chart("Facility power", quarters, series("facility_mw"), "facility power (MW)"), "power")
    report.add("Capex", "Cumulative AI capex spent (servers, network, facility).",
               line_chart("AI capex, cumulative", quarters, series("capex_usd_cumulative", 1e9),
                          "cumulative AI capex (US$ B)"), "capex")
    runs = [r for r in records if r.get("reference_run")]
    if runs:
        lines = ["| company | quarter | reference run |", "|---|---|---|"]
        for r in runs:
            run = r["reference_run"]
            text = (f"{run['days_to_train']:.1f} days on {run['chips']:,} {run['system']} chips "
                    f"(MFU {100 * run['mfu']:.0f} % of the {run['plan']['precision']} dense peak)"
                    if run.get("possible") else "does not fit")
            lines.append(f"| {r['company']} | {r['quarter']} | {text} |")
        report.add("Which training runs become possible when", "\n".join(lines))
    return report


def describe_power(watts: float) -> str:
    return units._engineering(watts, units._DEC_PREFIXES, "W", 2)


def backtest_table(console: Console, backtests: list[dict[str, Any]]) -> None:
    """The timeline against what each company reported (`FleetScenario.backtest`)."""
    for test in backtests:
        table = Table(title=f"backtest: {test['company']} {test['year']}, modelled vs reported")
        for column in ("figure", "modelled", "reported", "error"):
            table.add_column(column, justify="left" if column == "figure" else "right")
        for item in test["figures"]:
            fmt = _backtest_value(item["figure"])
            table.add_row(item["figure"].replace("_", " "), fmt(item["modelled"]), fmt(item["reported"]),
                          f"{100 * item['error']:+.1f} %")
        console.print(table)
    console.print("online: chips in service at year end; ordered: paid for by then (capex reaches the grid "
                  "capex_to_online_quarters later); sources in --json", highlight=False)


def _backtest_value(figure: str) -> Callable[[float], str]:
    if figure.startswith("capex"):
        return lambda v: f"${v / 1e9:,.1f} B"
    if figure.startswith("gw"):
        return lambda v: f"{v:,.2f} GW"
    return lambda v: f"{v:,.0f}"
