"""Money: capital cost of a cluster and the total cost of ownership of a chip-hour.

Capex = accelerators and servers (per-system price per chip) + scale-out network (a share of IT
capex) + facility (dollars per watt of provisioned IT load). The hourly cost of a chip charges
each capital item as a level annuity over its life at the cost of capital (WACC), adds
electricity for the facility power the chip draws and maintenance::

    TCO per chip-hour = capex x CRF(WACC, life) / hours per year + opex per hour
    CRF(r, n) = r (1 + r)^n / ((1 + r)^n - 1)          (CRF(0, n) = 1 / n)

The capital recovery factor is the standard annuity formula (e.g. Brealey, Myers & Allen,
*Principles of Corporate Finance*, equivalent annual cost; NREL's levelised-cost-of-energy
method uses the same CRF): the constant yearly payment that repays one dollar with interest r
over n years. The charge splits into straight-line depreciation (capex / n, the accounting
figure) and the return on capital (capex x (CRF - 1/n)); at WACC 0 it is straight-line alone.
Sources: catalog/economics.yaml.
"""

from __future__ import annotations

from typing import Any

from clusterplan.costs.power import cluster_power
from clusterplan.errors import SpecError
from clusterplan.specs import Chip, System
from clusterplan.specs.economics import Economics, RentedPrice

HOURS_PER_YEAR = 8766.0  # 365.25 days


def capital_recovery_factor(rate: float, years: float) -> float:
    """Yearly payment that repays 1 dollar over ``years`` at interest ``rate`` (annuity formula):
    ``r (1 + r)^n / ((1 + r)^n - 1)``, and ``1 / n`` at ``r = 0`` (straight line)."""
    if years <= 0:
        raise ValueError("a capital life must be > 0 years")
    if rate < 0:
        raise ValueError("a cost of capital must be >= 0")
    if rate == 0:
        return 1.0 / years
    growth = float((1.0 + rate) ** years)
    return rate * growth / (growth - 1.0)


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


def cost_per_chip_hour(system: System, chip: Chip, economics: Economics, activity: float = 1.0,
                       wacc: float | None = None) -> dict[str, Any]:
    """Total cost of ownership of one chip-hour at ``activity``, by component (USD).

    Capital is charged with the capital recovery factor at ``wacc`` (the catalog's WACC when
    None): ``depreciation_usd`` (IT, straight line over ``depreciation_years``) and
    ``facility_usd`` (facility, straight line over ``facility_life_years``) are the accounting
    depreciation; ``cost_of_capital_usd`` is the return on both at the WACC. ``total_usd``
    includes it; ``total_without_cost_of_capital_usd`` is the straight-line (WACC 0) figure."""
    rate = economics.wacc.value if wacc is None else wacc
    one = capex(system, chip, system.chips_per_node, economics)
    per_chip = {k: v / system.chips_per_node for k, v in one.items()}
    it_capex = per_chip["servers_usd"] + per_chip["network_usd"]
    it_life, facility_life = economics.depreciation_years.value, economics.facility_life_years.value
    depreciation = it_capex / (it_life * HOURS_PER_YEAR)
    facility = per_chip["facility_usd"] / (facility_life * HOURS_PER_YEAR)
    # Return on capital = capital charge (capex x CRF) - straight-line depreciation (capex / life).
    cost_of_capital = (it_capex * (capital_recovery_factor(rate, it_life) - 1.0 / it_life)
                       + per_chip["facility_usd"] * (capital_recovery_factor(rate, facility_life) - 1.0 / facility_life)
                       ) / HOURS_PER_YEAR
    power = cluster_power(system, chip, system.chips_per_node, activity, economics)
    kwh = power.facility_w / system.chips_per_node / 1000.0
    electricity = kwh * economics.electricity_usd_per_kwh.value
    maintenance = it_capex * economics.maintenance_share_per_year.value / HOURS_PER_YEAR
    straight_line = depreciation + facility + electricity + maintenance
    return {"depreciation_usd": depreciation, "facility_usd": facility, "cost_of_capital_usd": cost_of_capital,
            "electricity_usd": electricity, "maintenance_usd": maintenance,
            "total_usd": straight_line + cost_of_capital,
            "total_without_cost_of_capital_usd": straight_line,
            "wacc": rate, "capital_recovery_factor_it": capital_recovery_factor(rate, it_life),
            "activity": activity}


def rented_prices(system: System, economics: Economics) -> tuple[RentedPrice, ...]:
    """Public cloud prices of one of ``system``'s chips for an hour (headline price first)."""
    entry = economics.systems.get(system.name)
    return entry.rented if entry is not None else ()


def rented_record(system: System, economics: Economics) -> dict[str, Any]:
    """``rented_usd_per_chip_hour`` (the catalog's headline cloud price; None where no cloud
    sells the chip or no price was found) and every price with its basis and source."""
    prices = rented_prices(system, economics)
    return {"rented_usd_per_chip_hour": prices[0].usd_per_chip_hour if prices else None,
            "rented_prices": [price.model_dump() for price in prices]}


def price_flags(system: System, economics: Economics) -> tuple[str, ...]:
    """Why a cost figure of ``system`` rests on an estimate rather than a published price (the
    catalog marks each price's ``kind``)."""
    entry = economics.systems.get(system.name)
    if entry is None:
        return (f"no capital cost for {system.name} in catalog/economics.yaml: no cost figures",)
    if entry.kind != "published":
        return (f"{system.name} price ${entry.usd_per_chip:,.0f} per chip is an {entry.kind} "
                "(catalog/economics.yaml gives its method)",)
    return ()


def economics_records(economics: Economics) -> list[dict[str, Any]]:
    """Every number of catalog/economics.yaml with its kind and source (``catalog economics``)."""
    records: list[dict[str, Any]] = []
    for name, entry in economics:
        if name == "systems":
            continue
        records.append({"name": name, "value": entry.value, "kind": entry.kind, "source": entry.source})
    for name, system in economics.systems.items():
        records.append({"name": f"systems.{name}.usd_per_chip", "value": system.usd_per_chip,
                        "kind": system.kind, "source": system.source})
        for price in system.rented:
            records.append({"name": f"systems.{name}.rented ({price.basis})", "value": price.usd_per_chip_hour,
                            "kind": price.kind, "source": f"{price.instance}, {price.date}: {price.source}"})
    return records
