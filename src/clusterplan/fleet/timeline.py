"""A fleet's quarter-by-quarter timeline: chips, megawatts, EFLOP/s, capex and depreciation.

Each quarter, a company's AI capex (its capex times the AI share) is split over the systems of
its hardware mix in force; each system's all-in capital cost per chip (servers, network,
facility: ``costs/money.py``) turns dollars into chips. A power envelope, when given, caps the
chips a quarter may add (their provisioned facility power must fit); unspent dollars are
reported. Capex spent in quarter q buys chips that come online in quarter q + lag
(``capex_to_online_quarters``: the scenario's, else the catalog's sourced default, two
quarters): a quarter's record counts the chips online, the chips ordered (paid for, online or
not) and the capex spent in it, and the timeline runs on for the lag after the last capex
quarter. The power envelope of a quarter caps the chips ordered. Chips accumulate (nothing
retires inside a planning horizon shorter than the depreciation life); IT capex is depreciated
straight-line over its life from the quarter it comes online, the facility over its own.
Sustained EFLOP/s = peak x the MFU the estimator predicts for the scenario's reference run
on that system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from clusterplan.catalog import hardware_for, load_economics, load_system
from clusterplan.catalog.loader import validation_message
from clusterplan.costs.money import capex
from clusterplan.costs.power import cluster_power
from clusterplan.errors import SpecError
from clusterplan.specs.scenario import FleetScenario, quarter_index, quarter_label  # the schema


def parse_scenario(data: Any, origin: str) -> FleetScenario:
    if not isinstance(data, dict):
        raise SpecError("fleet", origin, "a fleet scenario must be a YAML mapping")
    try:
        scenario = FleetScenario.model_validate(data)
    except ValidationError as error:
        raise SpecError("fleet", origin, validation_message(error)) from None
    for company in scenario.companies:
        for entry in company.mix:
            load_system(entry.system, f"{company.name}.mix.system")
    return scenario


@dataclass(frozen=True)
class SystemCost:
    usd_per_chip: float  # all-in: servers, network, facility
    facility_w_per_chip: float  # provisioned (TDP)
    it_w_per_chip: float
    peak_bf16: float
    peak_fp8: float
    it_capex_share: float  # servers+network over all-in


def system_cost(system_name: str) -> SystemCost:
    hardware = hardware_for(load_system(system_name))
    economics = load_economics()
    node = hardware.system.chips_per_node
    cost = capex(hardware.system, hardware.chip, node, economics)
    power = cluster_power(hardware.system, hardware.chip, node, 1.0, economics)
    return SystemCost(
        usd_per_chip=cost["total_usd"] / node,
        facility_w_per_chip=power.facility_w / node,
        it_w_per_chip=power.it_w / node,
        peak_bf16=hardware.chip.peak("bf16"),
        peak_fp8=hardware.chip.peak("fp8"),
        it_capex_share=(cost["servers_usd"] + cost["network_usd"]) / cost["total_usd"],
    )


def online_lag_quarters(scenario: FleetScenario) -> int:
    """Quarters from capex to chips online: the scenario's, else the catalog's default."""
    if scenario.capex_to_online_quarters is not None:
        return scenario.capex_to_online_quarters
    return round(load_economics().capex_to_online_quarters.value)


@dataclass(frozen=True)
class _Purchase:
    spent_index: int
    online_index: int
    system: str
    chips: float
    it_capex: float
    facility_capex: float


def timeline(scenario: FleetScenario, sustained_mfu: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One record per company and quarter, from its first capex quarter to the lag after its
    last (see module doc)."""
    economics = load_economics()
    it_life_quarters = economics.depreciation_years.value * 4
    facility_life_quarters = economics.facility_life_years.value * 4
    lag = online_lag_quarters(scenario)
    mfu = sustained_mfu or {}
    records: list[dict[str, Any]] = []
    for company in scenario.companies:
        purchases: list[_Purchase] = []
        plans: dict[int, tuple[Any, float, float]] = {}  # quarter -> (plan, budget, spent)
        ordered: dict[str, float] = {}
        for plan in company.quarters:
            mix = company.mix_at(plan.quarter)
            if not mix:
                raise SpecError(f"{company.name}.mix", plan.quarter, "no hardware in the mix for this quarter")
            index = quarter_index(plan.quarter)
            budget = plan.capex_usd * company.ai_share
            spent = 0.0
            facility_now = sum(n * system_cost(s).facility_w_per_chip for s, n in ordered.items())
            for system, share in mix.items():
                cost = system_cost(system)
                wanted = budget * share / cost.usd_per_chip
                if plan.power_envelope_w is not None:
                    room = max(plan.power_envelope_w - facility_now, 0.0) / cost.facility_w_per_chip
                    wanted = min(wanted, room)
                    facility_now += wanted * cost.facility_w_per_chip
                ordered[system] = ordered.get(system, 0.0) + wanted
                spent += wanted * cost.usd_per_chip
                purchases.append(_Purchase(index, index + lag, system, wanted,
                                           wanted * cost.usd_per_chip * cost.it_capex_share,
                                           wanted * cost.usd_per_chip * (1 - cost.it_capex_share)))
            plans[index] = (plan, budget, spent)
        events = set(plans) | {p.online_index for p in purchases}
        quarters = range(min(events), max(events) + 1)  # every quarter, with or without capex
        cumulative = 0.0
        for index in quarters:
            plan, budget, spent = plans.get(index, (None, 0.0, 0.0))
            cumulative += spent
            online = [p for p in purchases if p.online_index <= index]
            chips: dict[str, float] = {}
            for p in online:
                chips[p.system] = chips.get(p.system, 0.0) + p.chips
            chips_ordered = sum(p.chips for p in purchases if p.spent_index <= index)
            ordered_by_system: dict[str, float] = {}
            for p in purchases:
                if p.spent_index <= index:
                    ordered_by_system[p.system] = ordered_by_system.get(p.system, 0.0) + p.chips
            added = sum(p.chips for p in online if p.online_index == index)
            depreciation = (sum(p.it_capex for p in online) / it_life_quarters
                            + sum(p.facility_capex for p in online) / facility_life_quarters)
            total_chips = sum(chips.values())
            it_w = sum(n * system_cost(s).it_w_per_chip for s, n in chips.items())
            facility_w = sum(n * system_cost(s).facility_w_per_chip for s, n in chips.items())
            peak_bf16 = sum(n * system_cost(s).peak_bf16 for s, n in chips.items())
            peak_fp8 = sum(n * system_cost(s).peak_fp8 for s, n in chips.items())
            sustained = sum(n * system_cost(s).peak_bf16 * mfu.get(s, 0.0) for s, n in chips.items())
            records.append({
                "company": company.name, "quarter": quarter_label(index),
                "capex_usd": plan.capex_usd if plan is not None else 0.0, "ai_capex_usd": budget,
                "ai_capex_spent_usd": spent, "ai_capex_unspent_usd": budget - spent,
                "capex_to_online_quarters": lag,
                "chips_added": round(added), "chips": round(total_chips), "chips_ordered": round(chips_ordered),
                "chips_by_system": {s: round(n) for s, n in chips.items()},
                "chips_ordered_by_system": {s: round(n) for s, n in ordered_by_system.items()},
                "it_mw": it_w / 1e6, "facility_mw": facility_w / 1e6,
                "peak_bf16_eflops": peak_bf16 / 1e18, "peak_fp8_eflops": peak_fp8 / 1e18,
                "sustained_bf16_eflops": sustained / 1e18,
                "capex_usd_cumulative": cumulative, "depreciation_usd_quarter": depreciation,
                "source": plan.source if plan is not None else
                f"no capex this quarter: chips bought {lag} quarters earlier come online",
            })
    return records


def check_envelopes(scenario: FleetScenario) -> None:
    """A power envelope must hold at least one node of every system of the mix in force."""
    for company in scenario.companies:
        for plan in company.quarters:
            if plan.power_envelope_w is None:
                continue
            for system in company.mix_at(plan.quarter):
                cost = system_cost(system)
                node_w = cost.facility_w_per_chip * load_system(system).chips_per_node
                if plan.power_envelope_w < node_w:
                    raise SpecError(f"{company.name}.quarters[{plan.quarter}].power_envelope_w",
                                    plan.power_envelope_w,
                                    f"is smaller than one {system} node ({node_w:,.0f} W at the facility)")


def reference_runs(scenario: FleetScenario, records: list[dict[str, Any]],
                   cache: dict[tuple[str, int], dict[str, Any] | None] | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Which training runs become possible when: for each company and quarter, the best plan
    (by time, on up to the chips of the company's largest system pool) for the reference run,
    and the MFU per system that sets the sustained EFLOP/s. ``cache`` keeps the searches by
    (system, chips) across calls; ``progress(text)`` is told each new search."""
    from clusterplan.catalog import load_model
    from clusterplan.training.search import SearchSpace, search

    run = scenario.reference_run
    if run is None:
        return {}
    model = load_model(run.model, "reference_run.model")
    space = SearchSpace(precisions=("bf16", "fp8"), chips_at_most=True)
    cache = {} if cache is None else cache
    mfu: dict[str, float] = {}
    for record in records:
        pools = record["chips_by_system"]
        if not pools:
            record["reference_run"] = None
            continue
        system, chips = max(pools.items(), key=lambda item: item[1])
        key = (system, int(chips))
        if key not in cache:
            if progress is not None:
                progress(f"searching the reference run on {int(chips):,} {system} chips ({record['quarter']})")
            found = search(model, hardware_for(load_system(system)), max(int(chips), 1), run.seq_len,
                           run.global_batch, space, top=1, tokens=run.tokens).best if chips >= 1 else []
            cache[key] = found[0] if found else None
        best = cache[key]
        if best is None:
            record["reference_run"] = {"system": system, "possible": False}
            continue
        mfu.setdefault(system, best["mfu"])
        record["reference_run"] = {
            "system": system, "possible": True, "chips": best["chips"],
            "days_to_train": best["time_to_train_s"] / 86400.0, "mfu": best["mfu"],
            "plan": {k: best["plan"][k] for k in ("tp", "pp", "vp", "cp", "ep", "dp", "precision")},
        }
    return {"model": run.model, "tokens": run.tokens, "mfu_by_system": mfu}


def backtest(scenario: FleetScenario, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The timeline against what each company reported for a year: modelled and reported capex,
    gigawatts added (facility power online at the end of the year minus at its start; the chips
    ordered in the year too, at their provisioned power, since capex reaches the grid only after
    ``capex_to_online_quarters``) and chips of a system (online, and ordered), with the signed
    error (modelled - reported) / reported."""
    out = []
    for test in scenario.backtest:
        rows = [r for r in records if r["company"] == test.company and r["quarter"].startswith(str(test.year))]
        if not rows:
            raise SpecError("backtest.company", test.company, f"has no quarter of {test.year} in the timeline")
        before = [r for r in records if r["company"] == test.company and r["quarter"] < f"{test.year}Q1"]
        start_mw = before[-1]["facility_mw"] if before else 0.0
        end = rows[-1]
        online = float(end.get("chips_by_system", {}).get(test.chips_system or "", 0))
        candidates = [
            ("capex_usd", test.capex_usd, sum(r["capex_usd"] for r in rows),
             "purchases of property and equipment: the scenario's input, summed"),
            ("gw_added_online", test.gw_added, (end["facility_mw"] - start_mw) / 1e3,
             "facility power of the chips online at year end, minus at its start"),
            ("gw_added_ordered", test.gw_added, (_ordered_mw(end) - start_mw) / 1e3,
             "facility power of every chip paid for by year end (online or not), minus at its start"),
        ]
        if test.chips_system is not None:
            candidates += [
                (f"chips_online_{test.chips_system}", test.chips_shipped, online,
                 f"{test.chips_system} chips online at year end"),
                (f"chips_ordered_{test.chips_system}", test.chips_shipped,
                 float(end.get("chips_ordered_by_system", {}).get(test.chips_system, online)),
                 f"{test.chips_system} chips paid for by year end (shipped lies between online and ordered)"),
            ]
        items = [{"figure": name, "modelled": modelled, "reported": reported.value,
                  "error": (modelled - reported.value) / reported.value, "note": note, "source": reported.source}
                 for name, reported, modelled, note in candidates if reported is not None]
        out.append({"company": test.company, "year": test.year, "figures": items})
    return out


def _ordered_mw(record: dict[str, Any]) -> float:
    """Facility megawatts of every chip a quarter's record says was paid for."""
    return float(sum(chips * system_cost(system).facility_w_per_chip / 1e6
                     for system, chips in record.get("chips_ordered_by_system", {}).items()))
