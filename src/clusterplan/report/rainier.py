"""The Project Rainier report: the campus' totals, a frontier-model training estimate, failures,
serving at a chat SLO and the fleet ramp."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from clusterplan import units
from clusterplan.catalog import hardware_for, load_model, load_scenario, load_system
from clusterplan.errors import SpecError
from clusterplan.report.tables import train_table
from clusterplan.specs import Chip, System
from clusterplan.training.command import wrap_command
from clusterplan.training.search import plan_label


def cluster_totals(system: System, chip: Chip, chips: int) -> dict[str, Any]:
    """Totals of ``chips`` chips built from ``system``: dense peaks, HBM, provisioned power
    (TDP) and capital cost where the catalog has a price."""
    from clusterplan.catalog import load_economics
    from clusterplan.costs.money import capex
    from clusterplan.costs.power import cluster_power

    economics = load_economics()
    power = cluster_power(system, chip, chips, 1.0, economics)
    money: dict[str, Any] = {}
    if system.name in economics.systems:
        money = {"capex_usd": capex(system, chip, chips, economics)["total_usd"],
                 "capex_breakdown_usd": capex(system, chip, chips, economics)}
    domain = system.scale_up_size
    return {
        "it_mw": power.it_w / 1e6,
        "facility_mw": power.facility_w / 1e6,
        **money,
        "chips": chips,
        "ultraservers": -(-chips // domain),
        "scale_up_domain_chips": domain,
        "peak_bf16_eflops": chips * chip.peak("bf16") / 1e18,
        "peak_fp8_eflops": chips * chip.peak("fp8") / 1e18,
        "hbm_bytes": chips * chip.hbm_bytes,
        "hbm_bandwidth_bytes_per_s": chips * chip.hbm_bandwidth,
    }


def _positive_int(data: dict[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"{where}.{key}", value, "must be a positive integer")
    return value


def rainier_record(scenario_name: str = "rainier") -> dict[str, Any]:
    scenario = load_scenario(scenario_name)
    system = load_system(str(scenario.get("system", "")), "scenario.system")
    hardware = hardware_for(system)
    chips = _positive_int(scenario, "chips", "scenario")
    record: dict[str, Any] = {
        "scenario": scenario.get("name", scenario_name),
        "description": str(scenario.get("description", "")).strip(),
        "system": system.name,
        "chip": hardware.chip.name,
        **cluster_totals(system, hardware.chip, chips),
        "growth": [],
        "source": scenario.get("source", ""),
    }
    growth = scenario.get("growth", [])
    if not isinstance(growth, list):
        raise SpecError("scenario.growth", growth, "must be a list of {label, chips, source} mappings")
    for index, stage in enumerate(growth):
        if not isinstance(stage, dict):
            raise SpecError(f"scenario.growth[{index}]", stage, "must be a mapping with label, chips, source")
        stage_chips = _positive_int(stage, "chips", f"scenario.growth[{index}]")
        record["growth"].append({"label": stage.get("label", ""), "source": stage.get("source", ""),
                                 **cluster_totals(system, hardware.chip, stage_chips)})
    campus = scenario.get("campus")
    if isinstance(campus, dict):
        record["campus"] = {
            **campus,
            "capex_usd": units.parse_count(campus.get("capex_usd", 0), "scenario.campus.capex_usd"),
            "power_w": units.parse_power(campus.get("power_w", 0), "scenario.campus.power_w"),
        }
    campus_power = record.get("campus", {}).get("power_w")
    for stage in [record, *record["growth"]]:
        if campus_power:
            stage["fits_campus_power"] = stage["facility_mw"] * 1e6 <= campus_power
    if "campus" in record and "capex_usd" in record:
        record["capex_reconciliation"] = capex_reconciliation(record)
    record["compute_claim"] = {
        "claim": "more than five times the compute Anthropic used to train its previous models (AWS)",
        "assumption": "the claim compares dense bf16 peak of the ~500,000 Trainium2 at launch with the "
                      "cluster behind Anthropic's previous frontier models",
        "implied_previous_max_bf16_eflops": record["peak_bf16_eflops"] / 5.0,
        "implied_previous_max_h100_equivalents": record["peak_bf16_eflops"] / 5.0 * 1e18 / 989.4e12,
    }
    training = scenario.get("training")
    if isinstance(training, dict):
        record["training"], record["search"] = _searched_training(training, hardware, chips)
        # The other side of the trade-off: the plan with the fewest chip-hours.
        cheapest, _ = _searched_training({**training, "objective": "cost"}, hardware, chips)
        record["training_fewest_chip_hours"] = cheapest
        record["deadline_s"] = units.parse_duration(training.get("deadline", "90d"), "scenario.training.deadline")
        if "cost_per_chip_hour_usd" in record["training"]:
            record["cost_per_chip_hour_usd"] = record["training"]["cost_per_chip_hour_usd"]
    chosen = scenario.get("reliability")
    settings: dict[str, Any] = chosen if isinstance(chosen, dict) else {}
    record["reliability"] = _reliability_section(system, hardware, record, settings)
    if "training" in record:
        record["training"]["with_failures"] = _with_failures(record["training"], system, settings)
    frontier = scenario.get("frontier_runs", [])
    if not isinstance(frontier, list):
        raise SpecError("scenario.frontier_runs", frontier, "must be a list of training jobs")
    record["frontier_runs"] = [
        {"label": str(job.get("label", job.get("model"))), **_searched_training(job, hardware, chips)[0]}
        for job in frontier if isinstance(job, dict)
    ]
    for run in record["frontier_runs"]:
        run["with_failures"] = _with_failures(run, system, settings)
    serving = scenario.get("serving")
    if serving is not None:
        record["serving"] = serving_section(serving, hardware, chips)
    if isinstance(scenario.get("fleet"), dict):
        from clusterplan.report.fleet import fleet_records

        record["fleet"] = fleet_records(scenario_name, runs=False)[1]
    return record


def capex_reconciliation(record: dict[str, Any]) -> dict[str, Any]:
    """The reported campus investment beside the model's capex, stage by stage.

    The reported figure (Indiana, 2024) is read as the campus' buildings and infrastructure for
    its full power at build-out: the model's comparable part is its facility capex (building,
    power, cooling at ``facility_usd_per_it_watt``); servers and network are AWS equipment
    outside it. Each stage is also given its share of the reported figure pro rata to its
    facility power (stage MW / campus MW)."""
    from clusterplan.catalog import load_economics

    economics = load_economics()
    campus = record["campus"]
    reported = float(campus["capex_usd"])
    campus_w = float(campus.get("power_w") or 0.0)
    rows = []
    for stage in record["growth"] or [{"label": "cluster", **record}]:
        parts = stage["capex_breakdown_usd"]
        share = stage["facility_mw"] * 1e6 / campus_w if campus_w else None
        pro_rata = reported * share if share is not None else None
        rows.append({
            "stage": stage["label"], "chips": stage["chips"],
            "servers_usd": parts["servers_usd"], "network_usd": parts["network_usd"],
            "facility_usd": parts["facility_usd"], "total_usd": parts["total_usd"],
            "facility_mw": stage["facility_mw"], "share_of_campus_power": share,
            "reported_pro_rata_usd": pro_rata,
            "facility_minus_reported_pro_rata_usd": parts["facility_usd"] - pro_rata if pro_rata is not None else None,
        })
    model_usd_per_facility_w = economics.facility_usd_per_it_watt.value / economics.pue.value
    reported_usd_per_facility_w = reported / campus_w if campus_w else None
    full = campus_w * model_usd_per_facility_w if campus_w else None
    last = rows[-1]
    explanation = (
        f"${reported / 1e9:.0f}B reported for the campus ({campus.get('location', '')}; read, as an assumption, as "
        "buildings and infrastructure"
        + (f" for {campus_w / 1e9:.1f} GW at full build-out" if campus_w else "") + ") vs the model's "
        f"${last['servers_usd'] / 1e9:.1f}B servers + ${last['network_usd'] / 1e9:.1f}B network + "
        f"${last['facility_usd'] / 1e9:.1f}B facility = ${last['total_usd'] / 1e9:.1f}B for the {last['stage']} "
        f"({last['chips']:,} chips). Servers and network are equipment outside the reported figure; the comparable "
        "part is the facility.")
    if reported_usd_per_facility_w is not None and full is not None and last["reported_pro_rata_usd"] is not None:
        explanation += (
            f" The stage draws {last['facility_mw']:,.0f} MW, {100 * last['share_of_campus_power']:.0f} % of the "
            f"campus, i.e. ${last['reported_pro_rata_usd'] / 1e9:.1f}B of the reported figure pro rata, against "
            f"the model's ${last['facility_usd'] / 1e9:.1f}B: the difference "
            f"({_billions(last['facility_minus_reported_pro_rata_usd'], signed=True)}) is the model's facility cost "
            "per watt, "
            f"${model_usd_per_facility_w:.1f} per facility watt (${economics.facility_usd_per_it_watt.value:.1f} per "
            f"IT watt, US average, catalog/economics.yaml) against the reported "
            f"${reported_usd_per_facility_w:.1f}; at the model's rate the whole {campus_w / 1e9:.1f} GW campus "
            f"would cost ${full / 1e9:.1f}B of facility.")
    return {"reported_usd": reported, "reported_source": str(campus.get("source", "")).strip(),
            "reported_scope": "assumption: buildings and infrastructure of the campus, without servers and network "
                              "equipment (the announcement does not itemise it)",
            "campus_power_w": campus_w or None, "stages": rows,
            "model_facility_usd_per_facility_w": model_usd_per_facility_w,
            "reported_usd_per_facility_w": reported_usd_per_facility_w,
            "model_facility_usd_full_campus": full, "explanation": explanation}


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


def _billions(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{'+' if signed and value > 0 else ''}{'-' if value < 0 else ''}${abs(value) / 1e9:,.1f} B"


def _reliability_inputs(model_name: str, system: System, chips: int, replicas: int,
                        settings: dict[str, Any]) -> Any:
    import dataclasses

    from clusterplan.reliability.failures import inputs_for

    inputs = inputs_for(load_model(model_name), system, chips, replicas=replicas,
                        checkpoint=str(settings.get("checkpoint", "sync")),  # type: ignore[arg-type]
                        recovery=str(settings.get("recovery", "spares")))  # type: ignore[arg-type]
    overrides: dict[str, Any] = {}
    for key in ("restart", "detection"):
        if key in settings:
            overrides[f"{key}_s"] = units.parse_duration(settings[key], f"scenario.reliability.{key}")
    return dataclasses.replace(inputs, **overrides)


def _with_failures(run: dict[str, Any], system: System, settings: dict[str, Any]) -> dict[str, Any]:
    """Time to train, goodput and cost of a run with failures, under the scenario's recovery."""
    from clusterplan.reliability.model import closed_form

    inputs = _reliability_inputs(run["model"], system, run["chips"], run["plan"]["dp"], settings)
    result = closed_form(inputs, run["time_to_train_s"])
    if "cost_usd" in run and result["goodput"] > 0:
        result["cost_usd"] = run["cost_usd"] / result["goodput"]
    result["interruptions_per_day"] = inputs.failure_rate * 86400.0
    return result


def _reliability_section(system: System, hardware: Any, record: dict[str, Any],
                         settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Interruptions per day, best checkpoint interval and goodput at each stage of the campus,
    with the catalog's Llama 3-era recovery and with the scenario's."""
    from clusterplan.reliability.model import closed_form

    rows = []
    training = record.get("training") or {}
    model_name = training.get("model", "llama3-405b")
    for stage in record["growth"] or [record]:
        for label, chosen in (("catalog defaults (Llama 3 era)", {}), ("scenario recovery", settings)):
            inputs = _reliability_inputs(model_name, system, stage["chips"], 1, chosen)
            result = closed_form(inputs, 30 * 86400.0)
            rows.append({"stage": stage.get("label", "cluster"), "chips": stage["chips"], "recovery": label,
                         "interruptions_per_day": inputs.failure_rate * 86400.0,
                         "mtbf_s": result["mtbf_s"], "checkpoint_interval_s": result["checkpoint_interval_s"],
                         "restart_s": inputs.restart_s, "goodput": result["goodput"]})
    return rows


def _searched_training(training: dict[str, Any], hardware: Any, chips: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The best plan on up to ``chips`` chips for the scenario's training job (plan search)."""
    from clusterplan.training.search import Constraints, SearchSpace, search

    model = load_model(str(training.get("model", "")), "scenario.training.model")
    tokens = units.parse_count(training.get("tokens", "15T"), "scenario.training.tokens")
    seq_len = _positive_int(training, "seq_len", "scenario.training")
    global_batch = _positive_int(training, "global_batch", "scenario.training")
    precisions = training.get("precisions", ["bf16"])
    if not isinstance(precisions, list) or not precisions:
        raise SpecError("scenario.training.precisions", precisions, "must be a non-empty list, e.g. [bf16, fp8]")
    settings: dict[str, Any] = dict(SearchSpace().settings)
    settings.update({k: training[k] for k in ("routing_gini", "overlap_ep", "mtp") if k in training})
    space = SearchSpace(precisions=tuple(str(p) for p in precisions), chips_at_most=True, settings=settings)
    objective = str(training.get("objective", "time"))
    fraction = float(training.get("max_memory_fraction", 0.9))
    deadline = units.parse_duration(training.get("deadline", "90d"), "scenario.training.deadline")
    constraints = Constraints(deadline_s=deadline if objective != "time" else None)
    result = search(model, hardware, chips, seq_len, global_batch, space, objective=objective,  # type: ignore[arg-type]
                    max_memory_fraction=fraction, top=5, tokens=tokens, constraints=constraints)
    if not result.best:
        raise SpecError("scenario.training", model.name, result.unmet or f"no plan fits on up to {chips:,} chips")
    best = result.best[0]
    best["share_of_cluster"] = best["chips"] / chips
    summary = result.record()
    summary["alternatives"] = summary.pop("best")[1:]
    return best, summary


def serving_section(serving: Any, hardware: Any, chips: int) -> dict[str, Any]:
    """The campus serving a frontier model at a chat SLO: the cheapest deployment found by the
    deployment search, the chips a demand needs, and what every chip of the campus could serve."""
    from clusterplan.inference.capacity import Slo
    from clusterplan.inference.deployments import search_deployments

    if not isinstance(serving, dict):
        raise SpecError("scenario.serving", serving, "must be a mapping with model, tokens, SLO and demand")
    where = "scenario.serving"
    model = load_model(str(serving.get("model", "")), f"{where}.model")
    isl = _positive_int(serving, "input_tokens", where)
    osl = _positive_int(serving, "output_tokens", where)
    slo = Slo(ttft_p99_s=units.parse_duration(serving.get("slo_ttft", "3s"), f"{where}.slo_ttft"),
              tpot_p99_s=units.parse_duration(serving.get("slo_tpot", "60ms"), f"{where}.slo_tpot"))
    demand = units.parse_count(serving.get("demand", "10M"), f"{where}.demand")
    if not (math.isfinite(demand) and demand > 0):
        raise SpecError(f"{where}.demand", demand, "must be a number of output tokens/s > 0")
    objective = str(serving.get("objective", "cost"))
    result = search_deployments(model, hardware, demand, slo, isl, osl, objective=objective,
                                weights=tuple(serving.get("weights", ("bf16", "fp8"))),
                                kv_caches=tuple(serving.get("kv_cache", ("bf16", "fp8"))), top=1)
    best = result.ranked[0].record(osl)
    replicas_on_campus = chips // best["chips_per_replica"]
    campus_tokens = replicas_on_campus * best["output_tokens_per_s_per_replica"]
    return {"model": model.name, "input_tokens": isl, "output_tokens": osl, "slo": slo.model_dump(),
            "objective": objective, "demand_output_tokens_per_s": demand, "best": best,
            "candidates": len(result.candidates), "simulated": result.simulated,
            "demand_share_of_campus": best["chips"] / chips,
            "campus_output_tokens_per_s": campus_tokens,
            "campus_output_tokens_per_day": campus_tokens * 86400.0}


def rainier_table(console: Console, record: dict[str, Any]) -> None:
    console.print(f"[bold]{record['scenario']}[/]: {record['description']}")
    table = Table(title="cluster totals (dense peaks)")
    for column in ("stage", "chips", "UltraServers", "bf16 peak", "fp8 peak", "HBM", "HBM bandwidth"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    stages = record["growth"] or [{"label": "cluster", **record}]
    for stage in stages:
        table.add_row(stage["label"], f"{stage['chips']:,}", f"{stage['ultraservers']:,}",
                      f"{stage['peak_bf16_eflops']:,.0f} EFLOP/s", f"{stage['peak_fp8_eflops']:,.0f} EFLOP/s",
                      units.format_bytes(stage["hbm_bytes"]),
                      units.format_bandwidth(stage["hbm_bandwidth_bytes_per_s"]))
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
                f"{cheap['chips']:,} chips, {plan_label(cheap['plan'])}, MFU {100 * cheap['mfu']:.1f} %, "
                f"{units.format_duration(cheap['time_to_train_s'])} and {units.format_count(cheap['chip_hours'])} "
                f"chip-hours (vs {units.format_count(training['chip_hours'])})")
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
        table = Table(title="capex: the reported campus figure vs the model (servers + network + facility = total)",
                      caption="MW, share: the stage's facility power and its share of the campus; pro rata: that "
                              "share of the reported figure; fac. - p.r.: the model's facility capex minus it")
        for column in ("stage", "servers", "network", "facility", "total", "MW", "share", "pro rata",
                       "fac. - p.r."):
            table.add_column(column, justify="left" if column == "stage" else "right", no_wrap=column != "stage",
                             min_width=12 if column == "stage" else None)
        for row in reconciliation["stages"]:
            share = row["share_of_campus_power"]
            table.add_row(row["stage"], _billions(row["servers_usd"]),
                          _billions(row["network_usd"]), _billions(row["facility_usd"]), _billions(row["total_usd"]),
                          f"{row['facility_mw']:,.0f}", f"{100 * share:.0f} %" if share is not None else "-",
                          _billions(row["reported_pro_rata_usd"]),
                          _billions(row["facility_minus_reported_pro_rata_usd"], signed=True))
        power = reconciliation["campus_power_w"]
        table.add_row("reported (whole campus)", "", "", "", _billions(reconciliation["reported_usd"]),
                      f"{power / 1e6:,.0f}" if power else "-", "100 %", "", "")
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
    runs = record.get("frontier_runs", [])
    if runs:
        table = Table(title="frontier runs on the campus (best plan by time; with failures under the scenario's "
                            "recovery)")
        for column in ("run", "chips", "plan", "MFU", "days failure-free", "days with failures", "goodput",
                       "cost with failures"):
            table.add_column(column, justify="left" if column in ("run", "plan") else "right")
        for run in runs:
            plan = run["plan"]
            failures = run.get("with_failures", {})
            days = failures.get("time_to_train_s", float("inf")) / 86400
            table.add_row(run["label"], f"{run['chips']:,}",
                          f"TP{plan['tp']} PP{plan['pp']} VP{plan['vp']} CP{plan['cp']} EP{plan['ep']} DP{plan['dp']} "
                          f"{plan['precision']}", f"{100 * run['mfu']:.1f} %",
                          f"{run['time_to_train_s'] / 86400:,.1f}", f"{days:,.1f}" if days != float("inf") else "never",
                          f"{100 * failures.get('goodput', 0.0):.1f} %",
                          f"${failures['cost_usd'] / 1e6:,.0f} M" if "cost_usd" in failures else "-")
        console.print(table)
    serving = record.get("serving")
    if serving:
        console.print(serving_summary(serving))
    reliability = record.get("reliability", [])
    if reliability:
        table = Table(title="failures at campus scale (one job on every chip; 405B checkpoint)")
        for column in ("stage", "recovery", "interruptions/day", "MTBF", "restart", "checkpoint every", "goodput"):
            table.add_column(column, justify="left" if column in ("stage", "recovery") else "right")
        for row in reliability:
            table.add_row(row["stage"], row["recovery"], f"{row['interruptions_per_day']:,.0f}",
                          units.format_duration(row["mtbf_s"]), units.format_duration(row["restart_s"]),
                          units.format_duration(row["checkpoint_interval_s"]), f"{100 * row['goodput']:.1f} %")
        console.print(table)


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
    """Markdown and HTML report of the Rainier record, with charts."""
    from pathlib import Path

    from clusterplan.report.documents import Report, bar_chart, line_chart, write_report

    report = Report("Project Rainier")
    stages = record["growth"] or [{"label": "cluster", **record}]
    rows = ["| stage | chips | UltraServers | bf16 peak EFLOP/s | fp8 peak EFLOP/s | IT MW | facility MW | "
            "model capex |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {s['label']} | {s['chips']:,} | {s['ultraservers']:,} | {s['peak_bf16_eflops']:,.0f} | "
             f"{s['peak_fp8_eflops']:,.0f} | {s['it_mw']:,.0f} | {s['facility_mw']:,.0f} | "
             + (f"${s['capex_usd'] / 1e9:,.1f} B |" if "capex_usd" in s else "- |") for s in stages]
    report.add("Cluster", str(record["description"]) + "\n\n" + "\n".join(rows))
    reconciliation = record.get("capex_reconciliation")
    if reconciliation:
        report.add("Capex: the reported campus figure vs the model", "\n".join(reconciliation_lines(reconciliation)))
    claim = record["compute_claim"]
    report.add("The compute claim", f"- {claim['claim']}\n- assumption: {claim['assumption']}\n"
               f"- implied previous cluster: at most {claim['implied_previous_max_bf16_eflops']:,.0f} EFLOP/s "
               f"dense bf16 (~{claim['implied_previous_max_h100_equivalents']:,.0f} H100-equivalents)")
    fleet = record.get("fleet", [])
    if fleet:
        quarters = [r["quarter"] for r in fleet]
        report.add("Capacity ramp", "Chips and facility power by quarter (`clusterplan fleet rainier`).",
                   line_chart("Rainier ramp", quarters, {"chips (thousands)": [r["chips"] / 1e3 for r in fleet],
                                                          "facility MW": [r["facility_mw"] for r in fleet]}, ""),
                   "ramp")
        report.add("Capex over time", "Cumulative capex spent (servers, network, facility).",
                   line_chart("Capex", quarters, {"cumulative $B": [r["capex_usd_cumulative"] / 1e9 for r in fleet]},
                              "$B"), "capex")
    training = record.get("training")
    if training:
        breakdown = training["time_breakdown_s"]
        cheap = record.get("training_fewest_chip_hours")
        commands = f"\n\nRerun it:\n\n```\n{training['command']}\n```" if "command" in training else ""
        if cheap is not None and "command" in cheap:
            commands += (f"\n\nFewest chip-hours within the {units.format_duration(record['deadline_s'])} deadline "
                         f"({cheap['chips']:,} chips, {plan_label(cheap['plan'])}, "
                         f"{cheap['time_to_train_s'] / 86400:.1f} days):\n\n```\n{cheap['command']}\n```")
        report.add("Training plan", f"{training['model']} on {training['chips']:,} chips, "
                   f"{plan_label(training['plan'])}: step "
                   f"{training['step_time_s']:.2f} s, MFU {100 * training['mfu']:.1f} %, "
                   f"{training['time_to_train_s'] / 86400:.1f} days for "
                   f"{units.format_count(training['tokens'])} tokens" + commands,
                   bar_chart("Step time breakdown", list(breakdown), [v for v in breakdown.values()], "s"), "step")
        memory = training["memory_breakdown"]
        report.add("Memory per chip", f"{training['memory_bytes_per_chip'] / 2**30:.1f} GiB of "
                   f"{training['memory_capacity_bytes'] / 2**30:.1f} GiB",
                   bar_chart("Memory per chip", list(memory), [v / 2**30 for v in memory.values()], "GiB"), "memory")
        hourly = training.get("cost_per_chip_hour_breakdown_usd")
        if hourly:
            parts = {k.removesuffix("_usd"): v for k, v in hourly.items()
                     if k.endswith("_usd") and not k.startswith("total")}
            without = hourly.get("total_without_cost_of_capital_usd")
            report.add("Cost per chip-hour", f"${hourly['total_usd']:.2f} per chip-hour (TCO; capital charged at "
                       f"{100 * hourly.get('wacc', 0.0):.0f} % WACC with the capital recovery factor)"
                       + (f", ${without:.2f} without the cost of capital (straight-line depreciation only)"
                          if without is not None else ""),
                       bar_chart("Cost per chip-hour", list(parts), list(parts.values()), "$"), "cost")
    reliability = record.get("reliability", [])
    if reliability:
        lines = ["| stage | recovery | interruptions/day | MTBF (min) | restart (s) | checkpoint every (s) | goodput |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['stage']} | {r['recovery']} | {r['interruptions_per_day']:,.0f} | {r['mtbf_s'] / 60:,.1f} | "
                  f"{r['restart_s']:,.0f} | {r['checkpoint_interval_s']:,.1f} | {100 * r['goodput']:.1f} % |"
                  for r in reliability]
        report.add("Failures at campus scale", "\n".join(lines))
    runs = record.get("frontier_runs", [])
    if runs:
        lines = ["| run | chips | MFU | days failure-free | days with failures | goodput | cost with failures |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for r in runs:
            failures = r.get("with_failures", {})
            wall = failures.get("time_to_train_s", float("inf"))
            lines.append(f"| {r['label']} | {r['chips']:,} | {100 * r['mfu']:.1f} % | "
                         f"{r['time_to_train_s'] / 86400:,.1f} | "
                         + (f"{wall / 86400:,.1f}" if wall != float("inf") else "never")
                         + f" | {100 * failures.get('goodput', 0.0):.1f} % | "
                         + (f"${failures['cost_usd'] / 1e6:,.0f} M |" if "cost_usd" in failures else "- |"))
        lines += ["", "Each run's plan, as the `clusterplan train` command that reproduces it:"]
        for r in runs:
            if "command" in r:
                lines += ["", f"{r['label']}:", "", "```", r["command"], "```"]
        report.add("Frontier runs", "\n".join(lines))
    serving = record.get("serving")
    if serving:
        report.add("Serving", serving_summary(serving) + f"\n\n{serving['candidates']} deployments considered, "
                   f"{serving['simulated']} simulated at the SLO (`clusterplan capacity`, docs/serving.md).")
    return write_report(report, Path(directory), "rainier")
