"""What Project Rainier is and does: the scenario checked, the cluster's totals, the training
plan the search picks, failures, serving at a chat SLO and the fleet ramp, as one record
(``clusterplan rainier``; ``report/rainier.py`` prints and writes it)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from clusterplan import units
from clusterplan.api._base import Answer, Request, demand_field, latency_field, tokens_field
from clusterplan.catalog import hardware_for, load_model, load_scenario, load_system
from clusterplan.errors import NoAnswerError, SpecError
from clusterplan.reliability.failures import RecoverySettings, recovery_settings
from clusterplan.scenario import check_scenario  # the schema: specs/scenario.py
from clusterplan.specs import Chip, Plan, System
from clusterplan.specs.plan import MAX_CHIPS
from clusterplan.training.step import Hardware


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


def with_overrides(scenario: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The scenario mapping with what-if ``overrides`` applied (a copy; None keeps the file's
    value): ``chips`` (the growth stages then become that one size unless ``growth`` is given),
    ``growth`` (chip counts of the stages), the training job's ``tokens``, the serving
    ``demand``/``slo_ttft``/``slo_tpot``, the failure model's ``recovery``/``checkpoint``/
    ``failure_scale``, and ``frontier_runs`` and ``serving`` (False drops the section)."""
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if not given:
        return scenario
    data = copy.deepcopy(scenario)
    if "chips" in given:
        data["chips"] = given["chips"]
        if "growth" not in given:
            data["growth"] = []
    if "growth" in given:
        stages = [stage for stage in data.get("growth") or [] if isinstance(stage, dict)]
        data["growth"] = [{"label": stages[i].get("label", f"stage {i + 1}") if i < len(stages) else f"stage {i + 1}",
                           "chips": chips, "source": "what-if (web planner)"}
                          for i, chips in enumerate(given["growth"])]
    if "tokens" in given and isinstance(data.get("training"), dict):
        data["training"]["tokens"] = given["tokens"]
    if isinstance(data.get("serving"), dict):
        for key in ("demand", "slo_ttft", "slo_tpot"):
            if key in given:
                data["serving"][key] = given[key]
    failures: dict[str, Any] = {key: given[key] for key in ("recovery", "checkpoint") if key in given}
    if "failure_scale" in given:  # on top of the scenario's own scale
        prior = (data.get("reliability") or {}).get("failure_scale", 1.0)
        prior = prior.get("value", 1.0) if isinstance(prior, dict) else prior
        failures["failure_scale"] = float(prior if prior is not None else 1.0) * given["failure_scale"]
    if failures:
        data["reliability"] = {**(data.get("reliability") or {}), **failures}
    if given.get("frontier_runs") is False:
        data["frontier_runs"] = []
    if given.get("serving") is False:
        data.pop("serving", None)
    return data


def rainier_record(scenario_name: str = "rainier", progress: Callable[[str], None] | None = None,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the Rainier report says, SI units. ``progress(text)`` is told each slow step;
    ``overrides``: what-if changes to the scenario (:func:`with_overrides`)."""
    step = progress or (lambda _text: None)
    scenario = with_overrides(load_scenario(scenario_name, "--scenario"), overrides)
    check_scenario(scenario, scenario_name)  # the whole file, before 15-25 s of searches
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
        # Chosen by its point estimate; its error band may still cross the deadline.
        from clusterplan.training.search import Constraints

        record["training_fewest_chip_hours"]["at_risk"] = Constraints(deadline_s=record["deadline_s"]).at_risk(
            record["training_fewest_chip_hours"])
        if "cost_per_chip_hour_usd" in record["training"]:
            record["cost_per_chip_hour_usd"] = record["training"]["cost_per_chip_hour_usd"]
    settings = recovery_settings(scenario.get("reliability"), "scenario.reliability")
    record["recovery"] = {"scenario": settings.record(), "catalog": RecoverySettings().record()}
    record["frontier_runs"] = [{"label": str(job.get("label", job.get("model"))), **results[f"frontier {index}"][0]}
                               for index, job in enumerate(jobs)]
    # One set of failure figures: every run's, under the scenario's recovery, from analyse()
    # (what `clusterplan reliability` prints for the same job; "reproduce" gives its command).
    runs = [record[key] for key in ("training", "training_fewest_chip_hours") if key in record]
    for run in [*runs, *record["frontier_runs"]]:
        _with_failures(run, system, settings)
    for alternative in record.get("search", {}).get("alternatives", []):
        alternative.pop("reliability", None)  # alternatives to the plan: their step, not their failures
    record["reliability"] = _reliability_section(system, record, settings)
    if serving is not None:
        record["serving"] = results["serving"]
    record.update(headline_bands(record, hardware))
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


def _billions(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{'+' if signed and value > 0 else ''}{'-' if value < 0 else ''}${abs(value) / 1e9:,.1f} B"


def _with_failures(run: dict[str, Any], system: System, settings: RecoverySettings) -> None:
    """The run's failures under the scenario's recovery, in place: ``run["reliability"]`` is the
    record of :func:`analyse` (the same as ``clusterplan reliability`` with ``reproduce``'s
    options), and the cost with failures."""
    from clusterplan.reliability.analysis import ReliabilityRequest, analyse

    request = ReliabilityRequest(load_model(run["model"]), system, Plan(**run["plan"]), tokens=run["tokens"],
                                 settings=settings)
    failures = analyse(request).record()
    run["reliability"] = failures
    run["reliability_label"] = "scenario recovery"
    goodput = float(failures["goodput"])  # type: ignore[arg-type]
    if "cost_usd" in run and goodput > 0:
        run["cost_with_failures_usd"] = run["cost_usd"] / goodput


#: The recoveries the campus table compares, by label.
CAMPUS_RECOVERIES = ("Llama 3 era", "scenario")
CAMPUS_DURATION_S = 30 * 86400.0


def _reliability_section(system: System, record: dict[str, Any], settings: RecoverySettings) -> list[dict[str, Any]]:
    """One job on (nearly) every chip of each stage of the campus: the training plan's replica
    shape repeated as often as the stage holds it (same sequences per replica), 30 days, under
    the catalog's Llama 3-era recovery and under the scenario's. Each row is :func:`analyse`'s
    record, with the stage and the recovery's label."""
    from clusterplan.reliability.analysis import ReliabilityRequest, analyse

    training = record.get("training")
    if not training:
        return []
    model = load_model(training["model"])
    plan = Plan(**training["plan"])
    per = plan.chips // plan.dp
    sequences = plan.global_batch // plan.dp
    rows = []
    for stage in record["growth"] or [record]:
        replicas = stage["chips"] // per
        if replicas < 1:
            continue
        data = {**plan.model_dump(), "dp": replicas, "global_batch": replicas * sequences}
        scaled = Plan(**data).validate_for(model, replicas * per)
        for label, chosen in zip(CAMPUS_RECOVERIES, (RecoverySettings(), settings), strict=True):
            request = ReliabilityRequest(model, system, scaled, duration_s=CAMPUS_DURATION_S, settings=chosen)
            rows.append({"stage": stage.get("label", "cluster"), "stage_chips": stage["chips"],
                         "profile": label, **analyse(request).record()})
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
        raise NoAnswerError("scenario.training", model.name, result.unmet or f"no plan fits on up to {chips:,} chips")
    best = result.best[0]
    best["share_of_cluster"] = best["chips"] / chips
    summary = result.record()
    summary["alternatives"] = summary.pop("best")[1:]
    return best, summary


def headline_bands(record: dict[str, Any], hardware: Hardware) -> dict[str, Any]:
    """The report's headline ranges (``training.*``, ``serving.*``) and every extrapolation flag
    of its parts, from the same cross-validated regimes as `train` and `capacity` (bands.py)."""
    from clusterplan.inference.capacity import CAPACITY_RATES, CAPACITY_TIMES, serving_bands
    from clusterplan.validation.bands import COVERAGE

    bands: dict[str, Any] = {}
    flags: list[str] = []
    training = record.get("training")
    if training:
        bands.update({f"training.{key}": value for key, value in training.get("bands", {}).items()})
        flags += training.get("extrapolation", [])
    serving = record.get("serving")
    if serving:
        serving.update(serving_bands(hardware, serving, CAPACITY_TIMES, CAPACITY_RATES).record())
        bands.update({f"serving.{key}": value for key, value in serving["bands"].items()})
        flags += serving["extrapolation"]
    for run in [*record.get("frontier_runs", []), *record.get("reliability", [])]:
        flags += run.get("extrapolation", [])
    return {"bands": bands, "band_coverage": COVERAGE, "extrapolation": list(dict.fromkeys(flags))}


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




class RainierRequest(Request):
    """A Rainier-style scenario: a built-in name (``rainier``) or, from the CLI, a YAML path;
    the other fields are what-if changes to it (None: the scenario's value)."""

    scenario: str = "rainier"
    chips: int | None = Field(None, ge=1, le=MAX_CHIPS, description="what-if: the cluster's chips (one stage)")
    growth: tuple[int, ...] | None = Field(None, min_length=1, max_length=8,
                                           description="what-if: the growth stages' chips, comma-separated")
    tokens: float | None = Field(None, description="what-if: the training job's tokens (15T)")
    demand: float | None = Field(None, description="what-if: serving demand, output tokens/s (10M)")
    slo_ttft: float | None = Field(None, description="what-if: serving p99 TTFT (3s)")
    slo_tpot: float | None = Field(None, description="what-if: serving p99 TPOT (60ms)")
    recovery: Literal["spares", "wait", "elastic"] | None = Field(None, description="what-if: failure recovery")
    checkpoint: Literal["sync", "async", "memory"] | None = Field(None, description="what-if: checkpointing")
    failure_scale: float | None = Field(None, gt=0, le=100, allow_inf_nan=False,
                                        description="what-if: every failure rate times this (1: the scenario's)")
    frontier_runs: bool | None = Field(None, description="what-if: false leaves the frontier runs out (faster)")
    serving: bool | None = Field(None, description="what-if: false leaves the serving search out (faster)")

    @field_validator("growth", mode="before")
    @classmethod
    def _growth(cls, value: Any) -> Any:
        if isinstance(value, str):
            from clusterplan.api._edge import csv_items

            try:
                return tuple(int(units.parse_count(item, "--growth")) for item in csv_items(value, "--growth"))
            except SpecError:
                raise SpecError("--growth", value, "must list chip counts, comma-separated, e.g. 500k,1M") from None
        return value

    @field_validator("growth")
    @classmethod
    def _stages(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        for chips in value or ():
            if not 1 <= chips <= MAX_CHIPS:
                raise SpecError("--growth", chips, f"each stage must be between 1 and {MAX_CHIPS:,} chips")
        return value

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        return tokens_field(value)

    @field_validator("demand", mode="before")
    @classmethod
    def _demand(cls, value: Any) -> Any:
        return demand_field(value)

    @field_validator("slo_ttft", "slo_tpot", mode="before")
    @classmethod
    def _latency(cls, value: Any, info: Any) -> Any:
        return latency_field(value, f"{info.field_name}_s")

    def overrides(self) -> dict[str, Any]:
        """The what-if fields given, as the scenario spells them."""
        values = {name: getattr(self, name) for name in type(self).model_fields if name != "scenario"}
        if values["failure_scale"] == 1.0:
            values["failure_scale"] = None  # the scenario's rates
        for section in ("frontier_runs", "serving"):
            if values[section] is True:
                values[section] = None  # the scenario's sections, as they are
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in values.items() if value is not None}


class RainierAnswer(Answer):
    """The report's figures (``record``: the ``rainier --json`` object, without ``report``)."""

    scenario: str
    system: str
    chip: str
    chips: int
    peak_bf16_eflops: float
    facility_mw: float
    training_step_time_s: float | None = None


def answer(request: RainierRequest, progress: Callable[[str], None] | None = None) -> RainierAnswer:
    """Build the whole record (15-25 s of plan and serving searches, in worker processes where
    there are cores); ``progress(text)`` is told each slow step."""
    overrides = request.overrides()
    record = rainier_record(request.scenario, progress=progress, overrides=overrides)
    if overrides:
        record["overrides"] = overrides
    training = record.get("training") or {}
    return RainierAnswer(record=record, scenario=str(record["scenario"]), system=record["system"],
                         chip=record["chip"], chips=record["chips"], peak_bf16_eflops=record["peak_bf16_eflops"],
                         facility_mw=record["facility_mw"], training_step_time_s=training.get("step_time_s"))
