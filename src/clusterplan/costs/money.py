"""Money: capital cost of a cluster and the total cost of ownership of a chip-hour.

Capex = accelerators and servers (per-system price per chip) + scale-out network (a share of IT
capex) + facility (dollars per watt of provisioned IT load). The hourly cost of a chip spreads
the IT capex over its depreciation life and the facility over its own, and adds electricity for
the facility power the chip draws and maintenance. Sources: catalog/economics.yaml.
"""

from __future__ import annotations

from typing import Any

from clusterplan.costs.power import cluster_power
from clusterplan.errors import SpecError
from clusterplan.specs import Chip, System
from clusterplan.specs.economics import Economics

HOURS_PER_YEAR = 8766.0  # 365.25 days


def server_usd_per_chip(system: System, economics: Economics) -> float:
    entry = economics.systems.get(system.name)
    if entry is None:
        raise SpecError("system", system.name, "no capex figure in catalog/economics.yaml for this system")
    return entry.usd_per_chip


def capex(system: System, chip: Chip, chips: int, economics: Economics) -> dict[str, float]:
    """Capital cost of ``chips`` accelerators: servers, network, facility (USD)."""
    servers = chips * server_usd_per_chip(system, economics)
    share = economics.network_capex_share.value
    network = servers * share / (1.0 - share)
    provisioned = cluster_power(system, chip, chips, 1.0, economics)
    facility = provisioned.it_w * economics.facility_usd_per_it_watt.value
    return {"servers_usd": servers, "network_usd": network, "facility_usd": facility,
            "total_usd": servers + network + facility}


def cost_per_chip_hour(system: System, chip: Chip, economics: Economics, activity: float = 1.0) -> dict[str, Any]:
    """Total cost of ownership of one chip-hour at ``activity``, by component (USD)."""
    one = capex(system, chip, system.chips_per_node, economics)
    per_chip = {k: v / system.chips_per_node for k, v in one.items()}
    it_capex = per_chip["servers_usd"] + per_chip["network_usd"]
    depreciation = it_capex / (economics.depreciation_years.value * HOURS_PER_YEAR)
    facility = per_chip["facility_usd"] / (economics.facility_life_years.value * HOURS_PER_YEAR)
    power = cluster_power(system, chip, system.chips_per_node, activity, economics)
    kwh = power.facility_w / system.chips_per_node / 1000.0
    electricity = kwh * economics.electricity_usd_per_kwh.value
    maintenance = it_capex * economics.maintenance_share_per_year.value / HOURS_PER_YEAR
    total = depreciation + facility + electricity + maintenance
    return {"depreciation_usd": depreciation, "facility_usd": facility, "electricity_usd": electricity,
            "maintenance_usd": maintenance, "total_usd": total, "activity": activity}


def price_flags(system: System, economics: Economics) -> tuple[str, ...]:
    """Why a cost figure of ``system`` rests on an estimate rather than a published price (the
    catalog marks estimates in each price's ``source``)."""
    entry = economics.systems.get(system.name)
    if entry is None:
        return (f"no capital cost for {system.name} in catalog/economics.yaml: no cost figures",)
    if "estimate" in entry.source.lower():
        return (f"{system.name} price ${entry.usd_per_chip:,.0f} per chip is an estimate "
                "(catalog/economics.yaml gives its method)",)
    return ()
