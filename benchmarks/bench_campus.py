"""Benchmark: one simulated year, hour by hour, of a 1,000,000-chip campus (issue #16).

The built-in Rainier scenario's campus section (a 405B-class chat model by day, a 2T dense and a
405B training job at night) on 1,000,000 Trainium2 for 365 days under the three policies.
``clusterplan campus`` sizes once (the deployment search per served model, the plan search at each
training job's few sizes, goodput at each: ``campus/sizing.py``), then simulates 8,760 hours per
policy as NumPy array operations (``campus/simulate.py``) and summarises per day and per run.

Prints the sizing time, the simulation time (three policies, daily and whole-run summaries), the
best of 3 for the simulation, and the end-to-end time. Target: the year at hourly resolution
within 10 s on one core (one process, one thread).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time

from clusterplan.campus.run import CampusResult, PolicyResult, campus_result, energy_curves, summarise
from clusterplan.campus.simulate import night_mask, simulate

TARGET_S = 10.0
CHIPS = 1_000_000
DAYS = 365


def main() -> None:
    start = time.perf_counter()
    result = campus_result("rainier", DAYS, "all", chips=CHIPS)
    total = time.perf_counter() - start
    best = min(_simulate_only(result) for _ in range(3))
    print(f"campus: {CHIPS:,} chips, {DAYS} days x 24 h x {len(result.policies)} policies")
    print(f"  sizing (deployment + plan searches, once): {result.setup_s:6.2f} s")
    print(f"  hourly simulation + summaries:             {result.simulate_s:6.2f} s (best of 3: {best:.2f} s)")
    print(f"  end to end:                                {total:6.2f} s  (target {TARGET_S:g} s)")
    for policy in result.policies:
        s = policy.summary
        print(f"  {policy.run.policy:9s} {s.training_tokens / DAYS / 1e9:8.1f} B tokens/day trained, "
              f"SLO met {100 * s.slo_attainment:6.2f} %, idle {100 * s.record()['idle_share']:4.1f} %, "
              f"{s.energy_mwh / DAYS:8,.0f} MWh/day, peak {s.peak_facility_mw:,.0f} MW")
    print("PASS" if total <= TARGET_S else "OVER TARGET")


def _simulate_only(result: CampusResult) -> float:
    """The hourly part again with the sizing already done (what a second policy query costs)."""
    section, sizing, envelope = result.section, result.sizing, result.envelope_w
    start = time.perf_counter()
    hours = DAYS * 24
    price, carbon = energy_curves(section)
    night = night_mask(section, hours)
    for name in ("shared", "dedicated", "slo-aware"):
        run = simulate(name, section, sizing, CHIPS, envelope, hours, price, carbon)
        capital = sizing.prices.capital_usd_per_chip_hour
        days = tuple(summarise(run, capital, night, slice(d * 24, d * 24 + 24)) for d in range(DAYS))
        PolicyResult(run, summarise(run, capital, night), days)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
