"""Economic and energy assumptions: every number with its source (catalog/economics.yaml)."""

from __future__ import annotations

from pydantic import Field

from clusterplan.specs._base import Spec


class Sourced(Spec):
    """A number with the source it comes from (or the reasoning behind an estimate)."""

    value: float = Field(ge=0)
    source: str = Field(min_length=3)


class SystemEconomics(Spec):
    """Capital cost of one system's accelerators and servers, per chip (accelerator, its share
    of the server: host CPUs, memory, NICs, chassis; not the network or the building)."""

    usd_per_chip: float = Field(gt=0)
    source: str = Field(min_length=3)


class Economics(Spec):
    """Facility, energy and money assumptions shared by every system, and per-system capex."""

    pue: Sourced
    grid_kg_co2_per_kwh: Sourced
    electricity_usd_per_kwh: Sourced
    depreciation_years: Sourced
    facility_life_years: Sourced
    facility_usd_per_it_watt: Sourced
    network_capex_share: Sourced
    maintenance_share_per_year: Sourced
    chip_idle_fraction: Sourced
    network_watts_per_chip_per_100gbps: Sourced
    systems: dict[str, SystemEconomics]
