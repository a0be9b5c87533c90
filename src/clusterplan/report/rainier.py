"""The Project Rainier report: the campus' totals, a frontier-model training estimate, failures,
serving at a chat SLO and the fleet ramp."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from clusterplan import units
from clusterplan.catalog import hardware_for, load_model, load_scenario, load_system
from clusterplan.errors import SpecError
from clusterplan.report.tables import train_table
from clusterplan.specs import Chip, System


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


def rainier_record(scenario_name: str = "rainier", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Everything the Rainier report says, SI units. ``progress(text)`` is told each slow step."""
    step = progress or (lambda _text: None)
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
    record["compute_claim"] = {
        "claim": "more than five times the compute Anthropic used to train its previous models (AWS)",
        "assumption": "the claim compares dense bf16 peak of the ~500,000 Trainium2 at launch with the "
                      "cluster behind Anthropic's previous frontier models",
        "implied_previous_max_bf16_eflops": record["peak_bf16_eflops"] / 5.0,
        "implied_previous_max_h100_equivalents": record["peak_bf16_eflops"] / 5.0 * 1e18 / 989.4e12,
    }
    training = scenario.get("training")
    frontier = scenario.get("frontier_runs", [])
    if not isinstance(frontier, list):
        raise SpecError("scenario.frontier_runs", frontier, "must be a list of training jobs")
    jobs = [job for job in frontier if isinstance(job, dict)]
    serving = scenario.get("serving")
    # The slow sections (plan searches, the serving search) are independent: computed at once,
    # in worker processes where there are cores for them, and used in the order below.
    tasks: dict[str, tuple[str, Any, str, int]] = {}
    system_name = str(scenario.get("system", ""))
    if isinstance(training, dict):
        tasks["training"] = ("search", training, system_name, chips)
        tasks["fewest chip-hours"] = ("search", {**training, "objective": "cost"}, system_name, chips)
    for index, job in enumerate(jobs):
        tasks[f"frontier {index}"] = ("search", job, system_name, chips)
    if serving is not None:
        tasks["serving"] = ("serving", serving, system_name, chips)
    results = _slow_sections(tasks, step)
    if isinstance(training, dict):
        record["training"], record["search"] = results["training"]
        # The other side of the trade-off: the plan with the fewest chip-hours.
        record["training_fewest_chip_hours"] = results["fewest chip-hours"][0]
        record["deadline_s"] = units.parse_duration(training.get("deadline", "90d"), "scenario.training.deadline")
        if "cost_per_chip_hour_usd" in record["training"]:
            record["cost_per_chip_hour_usd"] = record["training"]["cost_per_chip_hour_usd"]
    chosen = scenario.get("reliability")
    settings: dict[str, Any] = chosen if isinstance(chosen, dict) else {}
    record["reliability"] = _reliability_section(system, hardware, record, settings)
    if "training" in record:
        record["training"]["with_failures"] = _with_failures(record["training"], system, settings)
    record["frontier_runs"] = [{"label": str(job.get("label", job.get("model"))), **results[f"frontier {index}"][0]}
                               for index, job in enumerate(jobs)]
    for run in record["frontier_runs"]:
        run["with_failures"] = _with_failures(run, system, settings)
    if serving is not None:
        record["serving"] = results["serving"]
    if isinstance(scenario.get("fleet"), dict):
        from clusterplan.report.fleet import fleet_records

        step("building the fleet ramp")
        record["fleet"] = fleet_records(scenario_name, runs=False)[1]
    return record


def _section_job(task: tuple[str, Any, str, int]) -> tuple[str, Any]:
    """One slow section, in a worker process: ``("ok", result)`` or ``("refused", (field, value,
    rule))`` (a refusal crosses the process boundary as its parts)."""
    kind, spec, system_name, chips = task
    try:
        hardware = hardware_for(load_system(system_name, "scenario.system"))
        if kind == "serving":
            return "ok", serving_section(spec, hardware, chips)
        return "ok", _searched_training(spec, hardware, chips)
    except SpecError as error:
        return "refused", (error.field, error.value, error.rule)


def _slow_sections(tasks: dict[str, tuple[str, Any, str, int]], step: Callable[[str], None]) -> dict[str, Any]:
    """The results of ``tasks`` by name, computed on as many processes as there are cores (one:
    in this process). The first refusal in the order of ``tasks`` is raised, as if run in turn.
    Results do not depend on where a task runs: each is a pure function of its inputs."""
    import multiprocessing
    import os
    import threading
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    position = {name: index for index, name in enumerate(tasks)}
    # The biggest jobs first (frontier runs, the last first; then serving), so that two cores
    # finish together.
    names = sorted(tasks, key=lambda name: (not name.startswith("frontier"), name != "serving", -position[name]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(cores, len(names)))
    outcomes: dict[str, tuple[str, Any]] = {}
    if workers == 1 or "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        for name in names:
            step(f"searching {name} ({len(outcomes) + 1}/{len(names)})")
            outcomes[name] = _section_job(tasks[name])
    else:
        # Forked workers start at once with every module this process has imported (the
        # searches', the simulator's, the failure model's: imported here first, once); no other
        # thread runs in this process to be caught mid-way by the fork.
        import clusterplan.inference.deployments
        import clusterplan.reliability.model
        import clusterplan.training.search  # noqa: F401

        step(f"searching {len(names)} plans and deployments on {workers} processes")
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            pending: dict[Future[tuple[str, Any]], str] = {pool.submit(_section_job, tasks[n]): n for n in names}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    name = pending.pop(future)
                    outcomes[name] = future.result()
                    step(f"searched {name} ({len(outcomes)}/{len(names)})")
    for name in tasks:
        status, value = outcomes[name]
        if status == "refused":
            raise SpecError(*value)
    return {name: outcomes[name][1] for name in tasks}


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
    from clusterplan.training.search import SearchSpace, search

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
    max_step = deadline * seq_len * global_batch / tokens if objective != "time" else None
    result = search(model, hardware, chips, seq_len, global_batch, space, objective=objective,  # type: ignore[arg-type]
                    max_memory_fraction=fraction, top=5, tokens=tokens, max_step_time_s=max_step)
    if not result.best:
        raise SpecError("scenario.training", model.name, f"no plan fits on up to {chips:,} chips")
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
        console.print(f"campus: {campus.get('location', '')}, capex ${campus.get('capex_usd', 0) / 1e9:.0f}B, "
                      f"{campus.get('power_w', 0) / 1e9:.1f} GW at full build-out")
    if "training" in record:
        training = record["training"]
        found = record["search"]
        console.print(f"\n[bold]training estimate[/]: best plan by {found['objective']} among "
                      f"{found['plans_enumerated']:,} plans ({found['plans_fitting']:,} fit, searched in "
                      f"{found['search_time_s']:.2f} s); it uses {training['chips']:,} chips = "
                      f"{100 * training['share_of_cluster']:.1f} % of the cluster")
        train_table(console, training)
        cheap = record.get("training_fewest_chip_hours")
        if cheap is not None:
            plan = cheap["plan"]
            console.print(
                f"fewest chip-hours within the {units.format_duration(record['deadline_s'])} deadline: "
                f"{cheap['chips']:,} chips, TP{plan['tp']} PP{plan['pp']} "
                f"VP{plan['vp']} CP{plan['cp']} DP{plan['dp']} {plan['precision']}, MFU {100 * cheap['mfu']:.1f} % "
                f"(of the {plan['precision']} dense peak), "
                f"{units.format_duration(cheap['time_to_train_s'])} and {units.format_count(cheap['chip_hours'])} "
                f"chip-hours (vs {units.format_count(training['chip_hours'])})")


def rainier_summary(console: Console, record: dict[str, Any]) -> None:
    """Power, money, the compute claim, frontier runs and the fleet ramp (after the totals)."""
    table = Table(title="power and money (provisioned at TDP)")
    for column in ("stage", "chips", "IT MW", "facility MW", "fits campus envelope", "capex"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in record["growth"] or [{"label": "cluster", **record}]:
        fits = stage.get("fits_campus_power")
        table.add_row(stage["label"], f"{stage['chips']:,}", f"{stage['it_mw']:,.0f}", f"{stage['facility_mw']:,.0f}",
                      "-" if fits is None else ("yes" if fits else "NO"),
                      f"${stage['capex_usd'] / 1e9:,.1f} B" if "capex_usd" in stage else "-")
    console.print(table)
    claim = record["compute_claim"]
    console.print(f"compute claim: {claim['claim']}; at {record['peak_bf16_eflops']:,.0f} EFLOP/s dense bf16 the "
                  f"previous cluster had at most {claim['implied_previous_max_bf16_eflops']:,.0f} EFLOP/s "
                  f"(~{claim['implied_previous_max_h100_equivalents']:,.0f} H100-equivalents). "
                  f"Assumption: {claim['assumption']}.")
    if "cost_per_chip_hour_usd" in record:
        console.print(f"cost per Trainium2 chip-hour (TCO, at the training plan's activity): "
                      f"${record['cost_per_chip_hour_usd']:.2f}")
    runs = record.get("frontier_runs", [])
    if runs:
        table = Table(title="frontier runs on the campus (best plan by time; with failures under the scenario's "
                            "recovery)")
        for column in ("run", "chips", "MFU", "days failure-free / with failures", "goodput", "cost with failures"):
            table.add_column(column, justify="left" if column == "run" else "right")
        for run in runs:
            failures = run.get("with_failures", {})
            days = failures.get("time_to_train_s", float("inf")) / 86400
            table.add_row(run["label"], f"{run['chips']:,}", f"{100 * run['mfu']:.1f} %",
                          f"{run['time_to_train_s'] / 86400:,.1f} / "
                          + (f"{days:,.1f}" if days != float("inf") else "never"),
                          f"{100 * failures.get('goodput', 0.0):.1f} %",
                          f"${failures['cost_usd'] / 1e6:,.0f} M" if "cost_usd" in failures else "-")
        console.print(table)
        for run in runs:
            plan = run["plan"]
            console.print(f"  {run['label']}: TP{plan['tp']} PP{plan['pp']} VP{plan['vp']} CP{plan['cp']} "
                          f"EP{plan['ep']} DP{plan['dp']} {plan['precision']} "
                          f"(MFU of the {plan['precision']} dense peak)", highlight=False)
    serving = record.get("serving")
    if serving:
        console.print(serving_summary(serving))
    reliability = record.get("reliability", [])
    if reliability:
        table = Table(title="failures at campus scale (one job on every chip; 405B checkpoint)")
        mtbf_unit, mtbf = units.format_column([row["mtbf_s"] for row in reliability], "duration")
        restart_unit, restart = units.format_column([row["restart_s"] for row in reliability], "duration")
        every_unit, every = units.format_column([row["checkpoint_interval_s"] for row in reliability], "duration")
        for column in ("stage", "recovery", "interruptions per day", f"MTBF {mtbf_unit}", f"restart {restart_unit}",
                       f"ckpt every {every_unit}", "goodput"):
            table.add_column(column, justify="left" if column in ("stage", "recovery") else "right")
        for index, row in enumerate(reliability):
            table.add_row(row["stage"], row["recovery"], f"{row['interruptions_per_day']:,.0f}", mtbf[index],
                          restart[index], every[index], f"{100 * row['goodput']:.1f} %")
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
    """Markdown and HTML report of the Rainier record: the figures an analyst quotes first, then
    the assumptions behind them, then the tables and charts."""
    from pathlib import Path

    from clusterplan.report.documents import Report, write_report

    report = Report("Project Rainier", subtitle=str(record["description"]))
    _rainier_summary_figures(report, record)
    report.assumptions += _rainier_assumptions(record)
    _rainier_sections(report, record)
    return write_report(report, Path(directory), "rainier")


def _plan_text(plan: dict[str, Any]) -> str:
    return (f"TP{plan['tp']} PP{plan['pp']} VP{plan['vp']} CP{plan['cp']}"
            + (f" EP{plan['ep']}" if plan.get("ep", 1) > 1 else "") + f" DP{plan['dp']} {plan['precision']}")


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
        report.quote(f"{training['model']} on {units.format_count(training['tokens'])} tokens",
                     f"{training['time_to_train_s'] / 86400:,.1f} days",
                     f"failure-free; {training['chips']:,} chips, {_plan_text(plan)}, MFU "
                     f"{100 * training['mfu']:.1f} % of the {plan['precision']} dense peak")
        failures = training.get("with_failures")
        if failures and failures.get("time_to_train_s", math.inf) != math.inf:
            report.quote("the same run with failures", f"{failures['time_to_train_s'] / 86400:,.1f} days",
                         f"goodput {100 * failures['goodput']:.1f} % under the scenario's recovery")
        if "cost_usd" in training:
            report.quote("cost of that run (TCO)", f"${training['cost_usd'] / 1e6:,.1f} M",
                         f"failure-free, at ${training['cost_per_chip_hour_usd']:.2f} per chip-hour")
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
    out.append("Failures: closed-form goodput (optimal checkpoint interval) at the catalog's Llama 3-era failure "
               "rates; 'catalog defaults' recover as Llama 3 did (~10 min restarts), 'scenario recovery' as the "
               "scenario says (hot spares, asynchronous checkpoints, tens of seconds).")
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
    rows = ["| stage | chips | UltraServers | bf16 peak EFLOP/s | fp8 peak EFLOP/s | IT MW | facility MW | capex |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {s['label']} | {s['chips']:,} | {s['ultraservers']:,} | {s['peak_bf16_eflops']:,.0f} | "
             f"{s['peak_fp8_eflops']:,.0f} | {s['it_mw']:,.0f} | {s['facility_mw']:,.0f} | "
             + (f"${s['capex_usd'] / 1e9:,.1f} B |" if "capex_usd" in s else "- |") for s in stages]
    report.add("Cluster", "\n".join(rows))
    claim = record["compute_claim"]
    report.add("The compute claim", f"- {claim['claim']}\n- assumption: {claim['assumption']}\n"
               f"- implied previous cluster: at most {claim['implied_previous_max_bf16_eflops']:,.0f} EFLOP/s "
               f"dense bf16 (~{claim['implied_previous_max_h100_equivalents']:,.0f} H100-equivalents)")
    training = record.get("training")
    if training:
        plan = training["plan"]
        breakdown = {k.replace("_", " "): v for k, v in training["time_breakdown_s"].items() if v > 0}
        scale, unit, _ = units.column_unit(list(breakdown.values()), "duration")
        report.add("Training plan", f"{training['model']} on {training['chips']:,} chips ({_plan_text(plan)}): step "
                   f"{training['step_time_s']:.2f} s, MFU {100 * training['mfu']:.1f} % of the {plan['precision']} "
                   f"dense peak, {training['time_to_train_s'] / 86400:.1f} days for "
                   f"{units.format_count(training['tokens'])} tokens (failure-free)",
                   bar_chart("Step time breakdown", list(breakdown), [v / scale for v in breakdown.values()],
                             f"time per step ({unit})"), "step")
        memory = training["memory_breakdown"]
        report.add("Memory per chip", f"{training['memory_bytes_per_chip'] / 2**30:.1f} GiB of "
                   f"{training['memory_capacity_bytes'] / 2**30:.1f} GiB",
                   bar_chart("Memory per chip", list(memory), [v / 2**30 for v in memory.values()],
                             "memory per chip (GiB)"), "memory")
        hourly = training.get("cost_per_chip_hour_breakdown_usd")
        if hourly:
            parts = {k.removesuffix("_usd"): v for k, v in hourly.items() if k.endswith("_usd") and k != "total_usd"}
            report.add("Cost per chip-hour", f"${hourly['total_usd']:.2f} per chip-hour (TCO)",
                       bar_chart("Cost per chip-hour", list(parts), list(parts.values()), "US$ per chip-hour"),
                       "cost")
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
        lines = ["| run | chips | plan | MFU | days failure-free | days with failures | goodput | cost with failures |",
                 "|---|---:|---|---:|---:|---:|---:|---:|"]
        for r in runs:
            failures = r.get("with_failures", {})
            wall = failures.get("time_to_train_s", float("inf"))
            lines.append(f"| {r['label']} | {r['chips']:,} | {_plan_text(r['plan'])} | {100 * r['mfu']:.1f} % | "
                         f"{r['time_to_train_s'] / 86400:,.1f} | "
                         + (f"{wall / 86400:,.1f}" if wall != float("inf") else "never")
                         + f" | {100 * failures.get('goodput', 0.0):.1f} % | "
                         + (f"${failures['cost_usd'] / 1e6:,.0f} M |" if "cost_usd" in failures else "- |"))
        report.add("Frontier runs", "\n".join(lines) + "\n\nMFU: of the dense peak at each plan's precision.")
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
