"""Economic and energy assumptions: every number with its source (catalog/economics.yaml).

Every number also says what kind of figure it is (``kind``):

- ``published``: stated in a public source (a vendor or cloud list price, a filing, an
  official statistic, or an analyst's published figure for this very item);
- ``estimate``: derived here from published components (the source gives the method);
- ``assumption``: a judgement where no better source was found (the source says why).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from clusterplan.specs._base import Spec

Kind = Literal["published", "estimate", "assumption"]


class Sourced(Spec):
    """A number with the source it comes from (or the reasoning behind an estimate)."""

    value: float = Field(ge=0)
    kind: Kind
    source: str = Field(min_length=3)


class SourcedText(Spec):
    """A named choice (e.g. a depreciation method) with its source."""

    value: str = Field(min_length=1)
    kind: Kind
    source: str = Field(min_length=3)


class RentedPrice(Spec):
    """A public cloud price of one chip-hour: the instance's hourly price / its chips."""

    usd_per_chip_hour: float = Field(gt=0)
    basis: Literal["on-demand", "reserved", "capacity-block"]
    instance: str = Field(min_length=2, description="cloud instance or slice type, with its region")
    date: str = Field(min_length=4, description="when the price was published or observed")
    kind: Kind
    source: str = Field(min_length=3)


class SystemEconomics(Spec):
    """Capital cost of one system's accelerators and servers, per chip (accelerator, its share
    of the server: host CPUs, memory, NICs, chassis; not the network or the building), and the
    public cloud prices of renting one of its chips for an hour, where a cloud sells it."""

    usd_per_chip: float = Field(gt=0)
    kind: Kind
    source: str = Field(min_length=3)
    rented: tuple[RentedPrice, ...] = ()


class Economics(Spec):
    """Facility, energy and money assumptions shared by every system, and per-system capex."""

    pue: Sourced
    grid_kg_co2_per_kwh: Sourced
    electricity_usd_per_kwh: Sourced
    depreciation_years: Sourced
    depreciation_method: SourcedText
    facility_life_years: Sourced
    wacc: Sourced
    capex_to_online_quarters: Sourced
    facility_usd_per_it_watt: Sourced
    network_capex_share: Sourced
    maintenance_share_per_year: Sourced
    chip_idle_fraction: Sourced
    network_watts_per_chip_per_100gbps: Sourced
    systems: dict[str, SystemEconomics]
