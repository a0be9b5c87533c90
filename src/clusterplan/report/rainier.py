"""The Project Rainier report: the campus' totals and a frontier-model training estimate."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from clusterplan import units
from clusterplan.catalog import hardware_for, load_model, load_scenario, load_system
from clusterplan.catalog.loader import validation_message
from clusterplan.errors import SpecError
from clusterplan.report.tables import train_table
from clusterplan.specs import Chip, Plan, System
from clusterplan.training.summary import train_record


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
        model = load_model(str(training.get("model", "")), "scenario.training.model")
        try:
            plan = Plan.model_validate(training.get("plan", {}))
        except ValidationError as error:
            raise SpecError("scenario.training.plan", scenario_name, validation_message(error)) from None
        plan.validate_for(model)
        if plan.chips > chips:
            raise SpecError("scenario.training.plan", plan.chips, f"uses more chips than the cluster ({chips})")
        tokens = units.parse_count(training.get("tokens", "15T"), "scenario.training.tokens")
        record["training"] = train_record(model, hardware, plan, tokens)
        record["training"]["share_of_cluster"] = plan.chips / chips
    return record


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
        console.print(f"\n[bold]training estimate[/] ({training['chips']:,} chips = "
                      f"{100 * training['share_of_cluster']:.1f} % of the cluster)")
        train_table(console, training)
