"""The Project Rainier report: the campus' totals and a frontier-model training estimate."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from clusterplan import units
from clusterplan.catalog import hardware_for, load_model, load_scenario, load_system
from clusterplan.errors import SpecError
from clusterplan.report.tables import train_table
from clusterplan.specs import Chip, System


def cluster_totals(system: System, chip: Chip, chips: int) -> dict[str, Any]:
    """Totals of ``chips`` chips built from ``system`` (dense peaks, HBM)."""
    domain = system.scale_up_size
    return {
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
    training = scenario.get("training")
    if isinstance(training, dict):
        record["training"], record["search"] = _searched_training(training, hardware, chips)
        # The other side of the trade-off: the plan with the fewest chip-hours.
        cheapest, _ = _searched_training({**training, "objective": "cost"}, hardware, chips)
        record["training_fewest_chip_hours"] = cheapest
        record["deadline_s"] = units.parse_duration(training.get("deadline", "90d"), "scenario.training.deadline")
    return record


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
    space = SearchSpace(precisions=tuple(str(p) for p in precisions), chips_at_most=True)
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
                f"VP{plan['vp']} CP{plan['cp']} DP{plan['dp']} {plan['precision']}, MFU {100 * cheap['mfu']:.1f} %, "
                f"{units.format_duration(cheap['time_to_train_s'])} and {units.format_count(cheap['chip_hours'])} "
                f"chip-hours (vs {units.format_count(training['chip_hours'])})")
