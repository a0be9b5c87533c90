"""Catalog: YAML data with sources (chips, systems, models, scenarios) and its loader."""

from clusterplan.catalog.loader import (
    chip_names,
    hardware_for,
    load_chip,
    load_economics,
    load_efficiency,
    load_kernels,
    load_model,
    load_scenario,
    load_system,
    model_names,
    scenario_names,
    system_names,
)

__all__ = [
    "chip_names",
    "hardware_for",
    "load_chip",
    "load_economics",
    "load_efficiency",
    "load_kernels",
    "load_model",
    "load_scenario",
    "load_system",
    "model_names",
    "scenario_names",
    "system_names",
]
