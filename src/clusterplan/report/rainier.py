"""The Project Rainier report: the campus' totals, a frontier-model training estimate, failures,
serving at a chat SLO and the fleet ramp."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from clusterplan import units

# The planning half lives in api/rainier.py; these names stay importable from here.
from clusterplan.api.rainier import (
    _billions,
    capex_reconciliation,
    cluster_totals,
    rainier_record,
)
from clusterplan.reliability.failures import recovery_settings
from clusterplan.report.tables import train_table
from clusterplan.scenario import check_scenario
from clusterplan.training.command import wrap_command
from clusterplan.training.search import plan_label

__all__ = ["capex_reconciliation", "check_scenario", "cluster_totals", "rainier_record", "recovery_settings"]


def reconciliation_lines(reconciliation: dict[str, Any]) -> list[str]:
    """The reconciliation as a Markdown table and its explanation."""
    lines = ["| stage | chips | servers | network | facility | model total | facility MW | share of campus power "
             "| reported, pro rata | facility - reported pro rata |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in reconciliation["stages"]:
        share = row["share_of_campus_power"]
        cells = [row["stage"], f"{row['chips']:,}", _billions(row["servers_usd"]), _billions(row["network_usd"]),
                 _billions(row["facility_usd"]), _billions(row["total_usd"]), f"{row['facility_mw']:,.0f}",
                 f"{100 * share:.0f} %" if share is not None else "-", _billions(row["reported_pro_rata_usd"]),
                 _billions(row["facility_minus_reported_pro_rata_usd"], signed=True)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| reported campus investment | | | | | {_billions(reconciliation['reported_usd'])} | "
                 + (f"{reconciliation['campus_power_w'] / 1e6:,.0f}" if reconciliation["campus_power_w"] else "-")
                 + " | 100 % | | |")
    return [*lines, "", reconciliation["explanation"], "", f"Reported figure: {reconciliation['reported_source']}"]


def rainier_table(console: Console, record: dict[str, Any]) -> None:
    console.print(f"[bold]{record['scenario']}[/]: {record['description']}")
    stages = record["growth"] or [{"label": "cluster", **record}]
    hbm_unit, hbm = units.format_column([s["hbm_bytes"] for s in stages], "bytes")
    bw_unit, bandwidth = units.format_column([s["hbm_bandwidth_bytes_per_s"] for s in stages], "bandwidth")
    table = Table(title="cluster totals (dense peaks)")
    for column in ("stage", "chips", "Ultra-Servers", "bf16 peak EFLOP/s", "fp8 peak EFLOP/s", f"HBM {hbm_unit}",
                   f"HBM {bw_unit}"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for index, stage in enumerate(stages):
        table.add_row(stage["label"], f"{stage['chips']:,}", f"{stage['ultraservers']:,}",
                      f"{stage['peak_bf16_eflops']:,.0f}", f"{stage['peak_fp8_eflops']:,.0f}", hbm[index],
                      bandwidth[index])
    console.print(table)
    if "campus" in record:
        campus = record["campus"]
        console.print(f"campus: {campus.get('location', '')}, {campus.get('power_w', 0) / 1e9:.1f} GW at full "
                      "build-out; its reported investment is reconciled with the model's capex below")
    if "training" in record:
        training = record["training"]
        found = record["search"]
        console.print(f"\n[bold]training estimate[/]: best plan by {found['objective']} among "
                      f"{found['plans_enumerated']:,} plans ({found['plans_fitting']:,} fit, searched in "
                      f"{found['search_time_s']:.2f} s); it uses {training['chips']:,} chips = "
                      f"{100 * training['share_of_cluster']:.1f} % of the cluster")
        train_table(console, training)
        _print_command(console, "rerun this plan:", training)
        cheap = record.get("training_fewest_chip_hours")
        if cheap is not None:
            console.print(
                f"fewest chip-hours within the {units.format_duration(record['deadline_s'])} deadline: "
                f"{cheap['chips']:,} chips, {plan_label(cheap['plan'])}, MFU {100 * cheap['mfu']:.1f} % "
                f"(of the {cheap['plan']['precision']} dense peak), "
                f"{units.format_duration(cheap['time_to_train_s'])} and {units.format_count(cheap['chip_hours'])} "
                f"chip-hours (vs {units.format_count(training['chip_hours'])})")
            for risk in cheap.get("at_risk", []):
                console.print(f"at risk: {risk}", highlight=False)
            _print_command(console, "rerun it:", cheap)


def _print_command(console: Console, title: str, run: dict[str, Any]) -> None:
    """The ``clusterplan train`` command that reproduces ``run``, folded to the console width."""
    if "command" not in run:
        return
    console.print(title, highlight=False)
    for line in wrap_command(run["command"], width=min(console.width, 100)):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def rainier_summary(console: Console, record: dict[str, Any]) -> None:
    """Power, money, the compute claim, frontier runs and the fleet ramp (after the totals)."""
    table = Table(title="power and money (provisioned at TDP)")
    for column in ("stage", "chips", "IT MW", "facility MW", "fits campus envelope", "model capex"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in record["growth"] or [{"label": "cluster", **record}]:
        fits = stage.get("fits_campus_power")
        table.add_row(stage["label"], f"{stage['chips']:,}", f"{stage['it_mw']:,.0f}", f"{stage['facility_mw']:,.0f}",
                      "-" if fits is None else ("yes" if fits else "NO"),
                      f"${stage['capex_usd'] / 1e9:,.1f} B" if "capex_usd" in stage else "-")
    console.print(table)
    reconciliation = record.get("capex_reconciliation")
    if reconciliation:
        # Two narrow tables (80 columns): the model's capex by part, then the reported figure's
        # share of each stage.
        table = Table(title="capex, $B: the model (servers + network + facility = total)")
        for column in ("stage", "servers", "network", "facility", "total"):
            table.add_column(column, justify="left" if column == "stage" else "right", no_wrap=column != "stage")
        for row in reconciliation["stages"]:
            table.add_row(row["stage"], *(f"{row[key] / 1e9:,.1f}" for key in
                                          ("servers_usd", "network_usd", "facility_usd", "total_usd")))
        table.add_row("reported (whole campus)", "-", "-", "-", f"{reconciliation['reported_usd'] / 1e9:,.1f}")
        console.print(table)
        table = Table(title="the reported figure, pro rata to facility power",
                      caption="pro rata: the stage's share of the reported $B; facility - pro rata: the model's "
                              "facility capex minus it")
        for column in ("stage", "facility MW", "share", "pro rata $B", "facility - pro rata $B"):
            table.add_column(column, justify="left" if column == "stage" else "right", no_wrap=column != "stage")
        for row in reconciliation["stages"]:
            share, pro_rata, difference = (row["share_of_campus_power"], row["reported_pro_rata_usd"],
                                           row["facility_minus_reported_pro_rata_usd"])
            table.add_row(row["stage"], f"{row['facility_mw']:,.0f}", f"{100 * share:.0f} %" if share is not None
                          else "-", f"{pro_rata / 1e9:,.1f}" if pro_rata is not None else "-",
                          f"{difference / 1e9:+,.1f}" if difference is not None else "-")
        power = reconciliation["campus_power_w"]
        table.add_row("reported (whole campus)", f"{power / 1e6:,.0f}" if power else "-", "100 %", "-", "-")
        console.print(table)
        console.print(reconciliation["explanation"])
    claim = record["compute_claim"]
    console.print(f"compute claim: {claim['claim']}; at {record['peak_bf16_eflops']:,.0f} EFLOP/s dense bf16 the "
                  f"previous cluster had at most {claim['implied_previous_max_bf16_eflops']:,.0f} EFLOP/s "
                  f"(~{claim['implied_previous_max_h100_equivalents']:,.0f} H100-equivalents). "
                  f"Assumption: {claim['assumption']}.")
    if "cost_per_chip_hour_usd" in record:
        hourly = record.get("training", {}).get("cost_per_chip_hour_breakdown_usd", {})
        detail = (f" = ${hourly['depreciation_usd'] + hourly['facility_usd']:.2f} depreciation + "
                  f"${hourly['cost_of_capital_usd']:.2f} return on capital at {100 * hourly['wacc']:.0f} % WACC + "
                  f"${hourly['electricity_usd'] + hourly['maintenance_usd']:.2f} electricity and maintenance "
                  f"(${hourly['total_without_cost_of_capital_usd']:.2f} without the cost of capital)"
                  if "cost_of_capital_usd" in hourly else "")
        console.print(f"cost per Trainium2 chip-hour (TCO, at the training plan's activity): "
                      f"${record['cost_per_chip_hour_usd']:.2f}{detail}")
    runs = failure_runs(record)
    if runs:
        table = Table(title="training runs with failures (scenario recovery)")
        for column, header in TERMINAL_RUN_COLUMNS.items():
            table.add_column(header, justify="left" if column == "run" else "right")
        for label, run in runs:
            cells = run_cells(label, run)
            table.add_row(*(cells[column] for column in TERMINAL_RUN_COLUMNS))
        console.print(table)
        for label, run in runs:
            console.print(f"  {label}: {plan_label(run['plan'])} (MFU of the {run['plan']['precision']} dense peak)",
                          highlight=False)
    serving = record.get("serving")
    if serving:
        console.print(serving_summary(serving))
    reliability = record.get("reliability", [])
    if reliability:
        table = Table(title="failures at campus scale (one job on every chip, 30 days)")
        for column, header in TERMINAL_CAMPUS_COLUMNS.items():
            table.add_column(header, justify="left" if column in ("stage", "recovery") else "right")
        for row in reliability:
            cells = campus_cells(row)
            table.add_row(*(cells[column] for column in TERMINAL_CAMPUS_COLUMNS))
        console.print(table)
        console.print(campus_note(reliability), highlight=False)


RUN_COLUMNS = ("run", "chips", "plan", "MFU", "days failure-free", "interruptions/day", "goodput",
               "days with failures", "cost with failures")
CAMPUS_COLUMNS = ("stage", "chips", "recovery", "interruptions/day", "MTBF", "mean outage", "checkpoint every",
                  "goodput", "largest job at 90 %")
#: The columns the terminal shows (80 columns), with shorter headers; the cells are the same strings.
TERMINAL_RUN_COLUMNS = {"run": "run", "chips": "chips", "MFU": "MFU", "days failure-free": "days",
                        "goodput": "goodput", "days with failures": "with failures", "cost with failures": "cost"}
TERMINAL_CAMPUS_COLUMNS = {"stage": "stage", "recovery": "recovery", "MTBF": "MTBF", "mean outage": "outage",
                           "checkpoint every": "checkpoint", "goodput": "goodput",
                           "largest job at 90 %": "90 % job"}


def failure_runs(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, run) of the training estimate and the frontier runs: the runs with failures."""
    runs = []
    training = record.get("training")
    if training:
        runs.append((f"{training['model']}, {units.exact_count(training['tokens'])} tokens", training))
    return runs + [(run["label"], run) for run in record.get("frontier_runs", [])]


def _plan_text(plan: dict[str, Any]) -> str:
    parts = [f"TP{plan['tp']}", f"PP{plan['pp']}"] + [f"{key.upper()}{plan[key]}" for key in ("vp", "cp", "ep")
                                                     if plan.get(key, 1) > 1]
    return " ".join([*parts, f"DP{plan['dp']}", plan["precision"]])


def run_cells(label: str, run: dict[str, Any]) -> dict[str, str]:
    """A run with failures as table cells by column (terminal and Markdown print the same strings)."""
    failures = run["reliability"]
    cost = run.get("cost_with_failures_usd")
    return dict(zip(RUN_COLUMNS, [label, f"{run['chips']:,}", _plan_text(run["plan"]), f"{100 * run['mfu']:.1f} %",
            f"{run['time_to_train_s'] / 86400:,.1f}", f"{failures['interruptions_per_day']:,.0f}",
            f"{100 * failures['goodput']:.1f} %",
            "outpaced" if failures["outpaced"] else f"{failures['time_to_train_s'] / 86400:,.1f}",
            f"${cost / 1e6:,.1f} M" if cost is not None else "-"], strict=True))


def campus_cells(row: dict[str, Any]) -> dict[str, str]:
    """A row of the campus failure table as cells by column (terminal and Markdown print the same strings)."""
    largest = row["largest_job_chips_goodput_90"]
    return dict(zip(CAMPUS_COLUMNS, [
            row["stage"], f"{row['chips']:,}", row["profile"], f"{row['interruptions_per_day']:,.0f}",
            units.format_duration(row["mtbf_s"]), units.format_duration(row["mean_outage_s"]),
            units.format_duration(row["checkpoint_interval_s"])
            + (" (floor)" if row["checkpoint_interval_clamped"] else ""),
            f"{100 * row['goodput']:.1f} %", f"{largest:,}" if largest is not None else "none"], strict=True))


def campus_note(rows: list[dict[str, Any]]) -> str:
    """What the campus table's rows assume, in one paragraph."""
    per = rows[0]["largest_job"]["chips_per_replica"]
    recoveries = "; ".join(dict.fromkeys(f"{row['profile']}: {row['recovery_label']}" for row in rows))
    floors = sorted({row["checkpoint_interval_floor_reason"] for row in rows if row["checkpoint_interval_clamped"]})
    floor = (f" (floor): the optimal interval is shorter than {' or '.join(floors)}, so the interval is "
             f"raised to it." if floors else "")
    return (f"One job in replicas of {per:,} chips (the training plan's shape), as many as each stage holds. "
            f"Recovery: {recoveries} (catalog defaults otherwise). Failures during an outage fold into "
            f"it.{floor} --json gives each row's `clusterplan reliability` command ('reproduce').")


def markdown_table(columns: tuple[str, ...], rows: list[dict[str, str]], left: tuple[str, ...]) -> str:
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" if column in left else "---:" for column in columns) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(cells[c] for c in columns) + " |" for cells in rows)])


def serving_summary(serving: dict[str, Any]) -> str:
    """The serving section in a few sentences (console and Markdown)."""
    best, slo = serving["best"], serving["slo"]
    usd = best.get("usd_per_million_output_tokens")
    return (f"serving {serving['model']} at p99 TTFT {1000 * slo['ttft_p99_s']:g} ms / TPOT "
            f"{1000 * slo['tpot_p99_s']:g} ms ({serving['input_tokens']}/{serving['output_tokens']} tokens): "
            f"cheapest deployment {best['label']} ({best['chips_per_replica']} chips per replica, "
            f"{best['output_tokens_per_s_per_replica']:,.0f} output tok/s per replica"
            + (f", ${usd:.2f} per M output tokens" if usd is not None else "") + "); "
            f"{units.format_count(serving['demand_output_tokens_per_s'])} output tok/s need "
            f"{best['replicas']:,} replicas = {best['chips']:,} chips "
            f"({100 * serving['demand_share_of_campus']:.1f} % of the campus) and "
            f"{best['power_w']['facility_w'] / 1e6:,.1f} MW; the whole campus could serve "
            f"{units.format_count(serving['campus_output_tokens_per_s'])} output tok/s "
            f"({units.format_count(serving['campus_output_tokens_per_day'])} per day).")


def rainier_report(record: dict[str, Any], directory: Any) -> dict[str, str]:
    """Markdown and HTML report of the Rainier record: the figures an analyst quotes first, then
    the assumptions behind them, then the tables and charts."""
    from pathlib import Path

    from clusterplan.report.documents import write_report

    return write_report(rainier_document(record), Path(directory), "rainier")


def rainier_document(record: dict[str, Any]) -> Any:
    """The Rainier report as a document (``render_html`` of it is the HTML report)."""
    from clusterplan.report.documents import Report

    report = Report("Project Rainier", subtitle=str(record["description"]))
    _rainier_summary_figures(report, record)
    report.assumptions += _rainier_assumptions(record)
    _rainier_sections(report, record)
    return report


def _rainier_summary_figures(report: Any, record: dict[str, Any]) -> None:
    """The numbers an analyst quotes, each with its basis."""
    stages = record["growth"] or [{"label": "cluster", **record}]
    first, last = stages[0], stages[-1]
    chips = f"{first['chips']:,}" + (f" → {last['chips']:,}" if last is not first else "")
    report.quote(f"{record['chip']} chips", chips, " → ".join(str(s["label"]) for s in stages))
    report.quote("dense bf16 peak", f"{first['peak_bf16_eflops']:,.0f} EFLOP/s",
                 f"{first['chips']:,} chips; fp8: {first['peak_fp8_eflops']:,.0f} EFLOP/s")
    campus = record.get("campus", {})
    envelope = f"; campus envelope {campus['power_w'] / 1e9:.1f} GW" if campus.get("power_w") else ""
    report.quote("facility power at TDP", f"{first['facility_mw']:,.0f} MW",
                 f"{first['label']}; {last['facility_mw']:,.0f} MW at {last['label']}{envelope}")
    if "capex_usd" in first:
        announced = f"; announced campus ${campus['capex_usd'] / 1e9:,.0f} B" if campus.get("capex_usd") else ""
        report.quote("capex (servers, network, facility)", f"${first['capex_usd'] / 1e9:,.1f} B",
                     f"catalog estimate, {first['label']}{announced}")
    training = record.get("training")
    if training:
        plan = training["plan"]
        bands = training.get("bands", {})

        def span(field: str, scale: float, fmt: str) -> str:
            band = bands.get(field)
            return f"; range {band[0] / scale:{fmt}} to {band[1] / scale:{fmt}}" if band else ""

        report.quote(f"{training['model']} on {units.format_count(training['tokens'])} tokens",
                     f"{training['time_to_train_s'] / 86400:,.1f} days",
                     f"failure-free; {training['chips']:,} chips, {_plan_text(plan)}, MFU "
                     f"{100 * training['mfu']:.1f} % of the {plan['precision']} dense peak"
                     + span("time_to_train_s", 86400, ",.1f")
                     + " days (the 80 % range of publications left out of the fit)")
        failures = training.get("reliability")
        if failures and not failures.get("outpaced") and math.isfinite(failures.get("time_to_train_s", math.inf)):
            report.quote("the same run with failures", f"{failures['time_to_train_s'] / 86400:,.1f} days",
                         f"goodput {100 * failures['goodput']:.1f} % under the scenario's recovery")
        if "cost_usd" in training:
            report.quote("cost of that run (TCO)", f"${training['cost_usd'] / 1e6:,.1f} M",
                         f"failure-free, at ${training['cost_per_chip_hour_usd']:.2f} per chip-hour"
                         + span("cost_usd", 1e6, ",.1f").replace("range ", "range $") + (" M" if "cost_usd" in bands
                                                                                        else ""))
        if record.get("extrapolation"):
            report.assumptions.append("Outside validated ground: " + "; ".join(record["extrapolation"]) + ".")
    serving = record.get("serving")
    if serving:
        best = serving["best"]
        usd = best.get("usd_per_million_output_tokens")
        slo = serving["slo"]
        basis = (f"{best['label']} at p99 TTFT {slo['ttft_p99_s']:g} s / TPOT {1000 * slo['tpot_p99_s']:g} ms, "
                 f"{serving['input_tokens']}/{serving['output_tokens']} tokens")
        if usd is not None:
            report.quote(f"serving {serving['model']}", f"${usd:.2f} per M output tokens", basis)
        report.quote("output tokens/s the campus could serve",
                     f"{units.format_count(serving['campus_output_tokens_per_s'])}",
                     f"every chip serving as {best['label']}")


def _rainier_assumptions(record: dict[str, Any]) -> list[str]:
    """What the figures rest on, and how far to trust them."""
    out = ["Peaks are dense (no sparsity). MFU is model FLOP/s over the chip's dense peak at the plan's "
           "matmul precision: fp8 plans are measured against the fp8 peak, twice the bf16 one on Trainium2.",
           "No Trainium2 training runs are published: its training efficiencies come from other chip families' "
           "fits (see `clusterplan validate` and docs/validation.md); treat training figures as "
           "specification-based estimates.",
           "Power is provisioned at TDP (chips, hosts, network) times the PUE of the economics catalog; capex "
           "and cost per chip-hour use the catalog's estimated prices, not AWS figures."]
    campus = record.get("campus", {})
    if campus.get("source"):
        out.append(f"Campus: {' '.join(str(campus['source']).split())}")
    claim = record.get("compute_claim")
    if claim:
        out.append(f"Compute claim: {claim['assumption']}.")
    scenario_recovery = record.get("recovery", {}).get("scenario", {})
    label = scenario_recovery.get("label") if isinstance(scenario_recovery, dict) else None
    out.append("Failures: the exact closed-form mean (failures during an outage fold into it; checkpoint interval "
               "optimal and never below what a checkpoint needs) at the catalog's Llama 3-era failure rates per "
               "chip, extrapolated beyond the 16,384 GPUs they were measured on; 'Llama 3 era' recovers as Llama 3 "
               "did, 'scenario' as the scenario says"
               + (f" ({label})" if label else "") + " (docs/reliability.md).")
    serving = record.get("serving")
    if serving:
        out.append(f"Serving: a request-level simulation of each deployment at fixed request lengths "
                   f"({serving['input_tokens']}/{serving['output_tokens']} tokens), the highest rate meeting the "
                   f"p99 SLO; {serving['candidates']} deployments considered, {serving['simulated']} simulated.")
    if record.get("source"):
        out.append(f"Source of the scenario: {' '.join(str(record['source']).split())}")
    return out


def _rainier_sections(report: Any, record: dict[str, Any]) -> None:
    from clusterplan.report.documents import bar_chart, line_chart

    stages = record["growth"] or [{"label": "cluster", **record}]
    rows = ["| stage | chips | UltraServers | bf16 peak EFLOP/s | fp8 peak EFLOP/s | IT MW | facility MW | "
            "model capex |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {s['label']} | {s['chips']:,} | {s['ultraservers']:,} | {s['peak_bf16_eflops']:,.0f} | "
             f"{s['peak_fp8_eflops']:,.0f} | {s['it_mw']:,.0f} | {s['facility_mw']:,.0f} | "
             + (f"${s['capex_usd'] / 1e9:,.1f} B |" if "capex_usd" in s else "- |") for s in stages]
    report.add("Cluster", "\n".join(rows))
    reconciliation = record.get("capex_reconciliation")
    if reconciliation:
        report.add("Capex: the reported campus figure vs the model", "\n".join(reconciliation_lines(reconciliation)))
    claim = record["compute_claim"]
    report.add("The compute claim", f"- {claim['claim']}\n- assumption: {claim['assumption']}\n"
               f"- implied previous cluster: at most {claim['implied_previous_max_bf16_eflops']:,.0f} EFLOP/s "
               f"dense bf16 (~{claim['implied_previous_max_h100_equivalents']:,.0f} H100-equivalents)")
    training = record.get("training")
    if training:
        plan = training["plan"]
        breakdown = {k.replace("_", " "): v for k, v in training["time_breakdown_s"].items() if v > 0}
        scale, unit, _ = units.column_unit(list(breakdown.values()), "duration")
        cheap = record.get("training_fewest_chip_hours")
        commands = f"\n\nRerun it:\n\n```\n{training['command']}\n```" if "command" in training else ""
        if cheap is not None and "command" in cheap:
            commands += (f"\n\nFewest chip-hours within the {units.format_duration(record['deadline_s'])} deadline "
                         f"({cheap['chips']:,} chips, {plan_label(cheap['plan'])}, "
                         f"{cheap['time_to_train_s'] / 86400:.1f} days)"
                         + "".join(f"; at risk: {risk}" for risk in cheap.get("at_risk", []))
                         + f":\n\n```\n{cheap['command']}\n```")
        report.add("Training plan", f"{training['model']} on {training['chips']:,} chips ({plan_label(plan)}): step "
                   f"{training['step_time_s']:.2f} s, MFU {100 * training['mfu']:.1f} % of the {plan['precision']} "
                   f"dense peak, {training['time_to_train_s'] / 86400:.1f} days for "
                   f"{units.format_count(training['tokens'])} tokens (failure-free)" + commands,
                   bar_chart("Step time breakdown", list(breakdown), [v / scale for v in breakdown.values()],
                             f"time per step ({unit})"), "step")
        memory = training["memory_breakdown"]
        report.add("Memory per chip", f"{training['memory_bytes_per_chip'] / 2**30:.1f} GiB of "
                   f"{training['memory_capacity_bytes'] / 2**30:.1f} GiB",
                   bar_chart("Memory per chip", list(memory), [v / 2**30 for v in memory.values()],
                             "memory per chip (GiB)"), "memory")
        hourly = training.get("cost_per_chip_hour_breakdown_usd")
        if hourly:
            parts = {k.removesuffix("_usd"): v for k, v in hourly.items()
                     if k.endswith("_usd") and not k.startswith("total")}
            without = hourly.get("total_without_cost_of_capital_usd")
            report.add("Cost per chip-hour", f"${hourly['total_usd']:.2f} per chip-hour (TCO; capital charged at "
                       f"{100 * hourly.get('wacc', 0.0):.0f} % WACC with the capital recovery factor)"
                       + (f", ${without:.2f} without the cost of capital (straight-line depreciation only)"
                          if without is not None else ""),
                       bar_chart("Cost per chip-hour", list(parts), list(parts.values()), "US$ per chip-hour"),
                       "cost")
    runs = failure_runs(record)
    if runs:
        report.add("Training runs with failures", markdown_table(
            RUN_COLUMNS, [run_cells(label, run) for label, run in runs], ("run", "plan"))
            + "\n\nBest plan by time on up to the whole campus; failures under the scenario's recovery ("
            + runs[0][1]["reliability"]["recovery_label"] + ").")
    reliability = record.get("reliability", [])
    if reliability:
        commands = "\n".join(f"- {row['stage']}, {row['profile']}: `{row['reproduce']}`" for row in reliability)
        report.add("Failures at campus scale", markdown_table(
            CAMPUS_COLUMNS, [campus_cells(row) for row in reliability], ("stage", "recovery"))
            + "\n\n" + campus_note(reliability) + "\n\n" + commands)
    commanded = [(label, run) for label, run in failure_runs(record) if "command" in run]
    if commanded:
        lines = ["Each run's plan, as the `clusterplan train` command that reproduces it:"]
        for label, run in commanded:
            lines += ["", f"{label}:", "", "```", run["command"], "```"]
        report.add("Plans as commands", "\n".join(lines))
    serving = record.get("serving")
    if serving:
        report.add("Serving", serving_summary(serving) + f"\n\n{serving['candidates']} deployments considered, "
                   f"{serving['simulated']} simulated at the SLO (`clusterplan capacity`, docs/serving.md).")
    fleet = record.get("fleet", [])
    if fleet:
        quarters = [r["quarter"] for r in fleet]
        report.add("Capacity ramp", "Chips deployed by quarter (`clusterplan fleet rainier`).",
                   line_chart("Chips deployed", quarters, {"chips": [r["chips"] / 1e3 for r in fleet]},
                              "chips (thousands)"), "ramp")
        report.add("Power", "Facility power at TDP by quarter.",
                   line_chart("Facility power", quarters, {"facility": [r["facility_mw"] for r in fleet]},
                              "facility power (MW)"), "power")
        report.add("Capex over time", "Cumulative capex spent (servers, network, facility).",
                   line_chart("Capex, cumulative", quarters,
                              {"capex": [r["capex_usd_cumulative"] / 1e9 for r in fleet]}, "cumulative capex (US$ B)"),
                   "capex")
