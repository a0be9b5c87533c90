"""``clusterplan campus``: a scenario's campus simulated hour by hour under each policy, and the
records every output (terminal, JSON, Markdown, HTML) is printed from.

Load and check the whole scenario first (``scenario.py: check_scenario``, which checks the
``campus_simulation:`` section with ``campus/scenario.py: check_section``), size once (``sizing.py``), simulate
each policy (``simulate.py``), summarise per day and per run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clusterplan.campus.scenario import (
    DEFAULT_PRICE_SHAPE,
    WHERE,
    check_days,
    check_policy,
    check_section,
)
from clusterplan.campus.simulate import FloatArray, PolicyRun, simulate
from clusterplan.campus.sizing import Sizing, size_campus
from clusterplan.catalog import hardware_for, load_economics, load_scenario, load_system
from clusterplan.specs.scenario import CampusSimulation


@dataclass(frozen=True)
class Summary:
    """Totals of one policy over some hours (a day or the whole run)."""

    hours: int
    training_tokens: float
    training_tokens_by_job: tuple[float, ...]
    training_tokens_night: float
    training_tokens_day: float
    demanded_output_tokens: float
    served_output_tokens: float
    slo_attainment: float  # served / demanded output tokens
    worst_hour_slo_attainment: float
    serving_chip_hours: float
    training_chip_hours: float
    idle_chip_hours: float
    resizes: int
    resize_hours_lost: float
    energy_mwh: float
    peak_facility_mw: float
    energy_usd: float
    co2_tonnes: float
    cost_usd: float
    serving_cost_usd: float
    training_cost_usd: float
    idle_cost_usd: float

    @property
    def usd_per_million_served_tokens(self) -> float:
        return self.serving_cost_usd / self.served_output_tokens * 1e6 if self.served_output_tokens else math.nan

    @property
    def usd_per_billion_trained_tokens(self) -> float:
        return self.training_cost_usd / self.training_tokens * 1e9 if self.training_tokens else math.nan

    def record(self) -> dict[str, Any]:
        days = self.hours / 24.0
        return {"hours": self.hours, "training_tokens": self.training_tokens,
                "training_tokens_per_day": self.training_tokens / days,
                "training_tokens_by_job": list(self.training_tokens_by_job),
                "training_tokens_night": self.training_tokens_night, "training_tokens_day": self.training_tokens_day,
                "demanded_output_tokens": self.demanded_output_tokens,
                "served_output_tokens": self.served_output_tokens, "slo_attainment": self.slo_attainment,
                "worst_hour_slo_attainment": self.worst_hour_slo_attainment,
                "serving_chip_hours": self.serving_chip_hours, "training_chip_hours": self.training_chip_hours,
                "idle_chip_hours": self.idle_chip_hours,
                "idle_share": self.idle_chip_hours / max(self.serving_chip_hours + self.training_chip_hours
                                                         + self.idle_chip_hours, 1.0),
                "resizes": self.resizes, "resize_hours_lost": self.resize_hours_lost,
                "energy_mwh": self.energy_mwh, "peak_facility_mw": self.peak_facility_mw,
                "energy_usd": self.energy_usd, "co2_tonnes": self.co2_tonnes, "cost_usd": self.cost_usd,
                "serving_cost_usd": self.serving_cost_usd, "training_cost_usd": self.training_cost_usd,
                "idle_cost_usd": self.idle_cost_usd,
                "usd_per_million_served_tokens": self.usd_per_million_served_tokens,
                "usd_per_billion_trained_tokens": self.usd_per_billion_trained_tokens}


def summarise(run: PolicyRun, capital_usd_per_chip_hour: float, night: np.ndarray[Any, Any],
              hours: slice = slice(None)) -> Summary:
    """A :class:`Summary` of ``run`` over ``hours``. Costs: the chip-hour's capital and fixed part
    (``costs/money.py`` without electricity) per chip-hour held, plus the energy at each hour's price,
    split by the power each part draws (idle chips at the base draw)."""
    mwh = run.facility_w[hours] / 1e6
    usd_per_mwh = run.price_usd_per_kwh[hours] * 1000.0
    pue = run.facility_w[hours] / np.maximum(run.it_w[hours], 1.0)
    serving_chips = run.serving_chips[:, hours].sum(axis=0).astype(float)
    training_chips = run.training_chips[:, hours].sum(axis=0).astype(float)
    idle = run.idle_chips[hours].astype(float)
    serving_energy = float((run.serving_it_w[hours] * pue / 1e6 * usd_per_mwh).sum())
    training_energy = float((run.training_it_w[hours] * pue / 1e6 * usd_per_mwh).sum())
    energy = float((mwh * usd_per_mwh).sum())
    capital = 0.0 if math.isnan(capital_usd_per_chip_hour) else capital_usd_per_chip_hour
    serving_cost = capital * float(serving_chips.sum()) + serving_energy
    training_cost = capital * float(training_chips.sum()) + training_energy
    idle_cost = capital * float(idle.sum()) + energy - serving_energy - training_energy
    tokens = run.training_tokens[:, hours]
    at_night = night[hours]
    demand = float(run.demand[:, hours].sum()) * 3600.0
    served = float(run.served_tokens[:, hours].sum())
    changes = run.resize_s[:, hours]
    return Summary(
        hours=int(idle.size), training_tokens=float(tokens.sum()),
        training_tokens_by_job=tuple(float(t) for t in tokens.sum(axis=1)),
        training_tokens_night=float(tokens[:, at_night].sum()), training_tokens_day=float(tokens[:, ~at_night].sum()),
        demanded_output_tokens=demand, served_output_tokens=served,
        slo_attainment=served / demand if demand > 0 else 1.0,
        worst_hour_slo_attainment=float(run.slo_attainment()[hours].min()),
        serving_chip_hours=float(serving_chips.sum()), training_chip_hours=float(training_chips.sum()),
        idle_chip_hours=float(idle.sum()), resizes=int((changes > 0).sum()),
        resize_hours_lost=float(changes.sum()) / 3600.0,
        energy_mwh=float(mwh.sum()), peak_facility_mw=float(mwh.max()), energy_usd=energy,
        co2_tonnes=float((mwh * run.carbon_kg_per_kwh[hours]).sum()),
        cost_usd=serving_cost + training_cost + idle_cost, serving_cost_usd=serving_cost,
        training_cost_usd=training_cost, idle_cost_usd=idle_cost)


@dataclass(frozen=True)
class PolicyResult:
    run: PolicyRun
    summary: Summary
    days: tuple[Summary, ...]

    def hourly(self) -> list[dict[str, Any]]:
        """One record per hour (``hour``, chips by use, MW, tokens, SLO attainment, ...)."""
        r = self.run
        serving = r.serving_chips.sum(axis=0)
        training = r.training_chips.sum(axis=0)
        tokens = r.training_tokens.sum(axis=0)
        slo = r.slo_attainment()
        demand = r.demand.sum(axis=0)
        required = r.required_chips.sum(axis=0)
        return [{"hour": h, "day": h // 24, "hour_of_day": h % 24, "serving_chips": int(serving[h]),
                 "serving_required_chips": int(required[h]), "training_chips": int(training[h]),
                 "idle_chips": int(r.idle_chips[h]), "it_mw": float(r.it_w[h]) / 1e6,
                 "facility_mw": float(r.facility_w[h]) / 1e6, "training_tokens": float(tokens[h]),
                 "demand_output_tokens_per_s": float(demand[h]), "slo_attainment": float(slo[h]),
                 "price_usd_per_kwh": float(r.price_usd_per_kwh[h]),
                 "carbon_kg_per_kwh": float(r.carbon_kg_per_kwh[h])} for h in range(r.hours)]

    def record(self, hourly: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.run.policy, "summary": self.summary.record(),
                               "daily": [{"day": d, **day.record()} for d, day in enumerate(self.days)]}
        if hourly:
            out["hourly"] = self.hourly()
        return out


@dataclass(frozen=True)
class CampusResult:
    """Everything ``clusterplan campus`` reports."""

    scenario: str
    description: str
    system: str
    chip: str
    campus_chips: int
    envelope_w: float
    days: int
    section: CampusSimulation
    sizing: Sizing
    policies: tuple[PolicyResult, ...]
    setup_s: float
    simulate_s: float

    def record(self) -> dict[str, Any]:
        """The one JSON object: the scenario, what was sized, the first policy's hourly, daily and
        whole-run figures at the top, and every policy side by side under ``policies``."""
        first = self.policies[0].record()
        return {
            "scenario": self.scenario, "description": self.description, "system": self.system, "chip": self.chip,
            "campus_chips": self.campus_chips,
            "power_envelope_mw": self.envelope_w / 1e6 if math.isfinite(self.envelope_w) else None,
            "days": self.days, "hours": self.days * 24,
            "night_hours": [self.section.night_start, self.section.night_end], "headroom": self.section.headroom,
            "serving": [s.record() for s in self.sizing.serving],
            "training": [t.record() for t in self.sizing.training],
            "capital_usd_per_chip_hour": self.sizing.prices.capital_usd_per_chip_hour
            if math.isfinite(self.sizing.prices.capital_usd_per_chip_hour) else None,
            "policy": first["policy"], "summary": first["summary"], "daily": first["daily"],
            "hourly": first["hourly"],
            "policies": [p.record(hourly=index > 0) | ({"hourly": first["hourly"]} if index == 0 else {})
                         for index, p in enumerate(self.policies)],
            "comparison": [{"policy": p.run.policy, **p.summary.record()} for p in self.policies],
            "timing_s": {"setup": self.setup_s, "simulate": self.simulate_s},
            "assumptions": assumptions(self.section),
        }


def assumptions(section: CampusSimulation) -> list[str]:
    price = "per the scenario" if section.energy.price_usd_per_kwh else \
        "ASSUMED time-of-use shape (0.75x 22:00-06:00, 1.35x 14:00-19:00) on the catalog's average price"
    carbon = "per the scenario" if section.energy.carbon_kg_per_kwh else \
        "the catalog's US grid average, flat (ASSUMED: no hourly figure)"
    return [
        "Practice modelled by `shared`: most chips serve inference, training runs at night and pauses by day "
        "(Semafor, 2025-10-29, one source).",
        "Hour 0 is Monday 00:00 campus local time; demand shapes, growth and peaks as in the scenario "
        "(defaults ASSUMED: docs/campus.md).",
        f"Serving reserves demand x (1 + {section.headroom:g}) in whole replicas at the SLO rate found once per "
        "model by the capacity search; hourly means (the headroom stands for the variation within an hour).",
        "Training sizes are the plan search's fastest plans at a few chip limits; goodput from the reliability "
        "closed form under the scenario's recovery; a resize costs a checkpoint, a restart and a re-sharded "
        "restore.",
        f"Electricity price: {price}; carbon intensity: {carbon}.",
        "Cost per chip-hour: costs/money.py TCO without electricity (capital, depreciation, maintenance), plus "
        "each hour's energy at its price; idle chips' cost is reported apart.",
    ]


def energy_curves(section: CampusSimulation) -> tuple[FloatArray, FloatArray]:
    economics = load_economics()
    energy = section.energy
    price = (np.asarray(energy.price_usd_per_kwh, dtype=float) if energy.price_usd_per_kwh
             else economics.electricity_usd_per_kwh.value * np.asarray(DEFAULT_PRICE_SHAPE))
    carbon = (np.asarray(energy.carbon_kg_per_kwh, dtype=float) if energy.carbon_kg_per_kwh
              else np.full(24, economics.grid_kg_co2_per_kwh.value))
    return price, carbon


def campus_result(reference: str = "rainier", days: int = 7, policy: str = "all",
                  progress: Callable[[str], None] | None = None,
                  chips: int | None = None) -> CampusResult:
    """The campus of scenario ``reference`` over ``days`` under ``policy`` (or ``all``). ``chips``
    overrides the scenario's campus size (benchmarks)."""
    from clusterplan.reliability.failures import recovery_settings
    from clusterplan.scenario import check_scenario

    step = progress or (lambda _text: None)
    policies = check_policy(policy)
    check_days(days)
    data = load_scenario(reference)
    scenario = check_scenario(data, reference)  # the whole file, the campus section included
    system = load_system(scenario.system, "scenario.system")
    hardware = hardware_for(system)
    section = check_section(data.get("campus_simulation"), data, hardware.chip)
    campus_chips = chips or scenario.chips
    envelope = scenario.campus.power_w if scenario.campus is not None and scenario.campus.power_w > 0 else math.inf
    settings = recovery_settings(data.get("reliability"), "scenario.reliability")
    start = time.perf_counter()
    step("sizing serving deployments and training plans")
    sizing = size_campus(section, hardware, campus_chips, settings, WHERE)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    hours = days * 24
    price, carbon = energy_curves(section)
    from clusterplan.campus.simulate import night_mask

    night = night_mask(section, hours)
    results = []
    for name in policies:
        step(f"simulating {name}")
        run = simulate(name, section, sizing, campus_chips, envelope, hours, price, carbon)
        capital = sizing.prices.capital_usd_per_chip_hour
        daily = tuple(summarise(run, capital, night, slice(d * 24, d * 24 + 24)) for d in range(days))
        results.append(PolicyResult(run, summarise(run, capital, night), daily))
    return CampusResult(str(data.get("name") or reference), str(data.get("description", "")).strip(), system.name,
                        hardware.chip.name, campus_chips, envelope, days, section, sizing, tuple(results), setup,
                        time.perf_counter() - start)

