"""Benchmark: plan search throughput and wall time (issue #3).

Cases: llama3-405b, seq 8192, global batch 2048 sequences (16.8M tokens, Llama 3's), bf16 and
fp8, every recompute level and ZeRO stage,
  1. on exactly 16,384 H100 (dgx-h100),
  2. on up to 500,000 Trainium2 (trn2-ultraserver, Project Rainier): any count of whole 64-chip
     UltraServers up to the cluster whose data-parallel degree divides the batch,
  3. the same with --any-shape (any chip count and TP: the space before whole domains),
  4. the same as 2 for the fewest chip-hours within a 90-day deadline and a $50M budget (the
     constraints are masks over the timed plans).
Prints plans enumerated, fitting and timed, the best of several runs' wall time, and plans/s
(enumerated / wall time: every plan is decided, by memory, dominance or timing), plus the raw
estimator rate on the timed plans. One process, one thread (NumPy single-threaded kernels).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.training.search import Constraints, SearchSpace, search

DEADLINE_AND_BUDGET = Constraints(deadline_s=90 * 86400.0, budget_usd=50e6)
CASES = (  # model, system, chips, up to, any shape, constraints, objective
    ("llama3-405b", "dgx-h100", 16_384, False, False, Constraints(), "time"),
    ("llama3-405b", "trn2-ultraserver", 500_000, True, False, Constraints(), "time"),
    ("llama3-405b", "trn2-ultraserver", 500_000, True, True, Constraints(), "time"),
    ("llama3-405b", "trn2-ultraserver", 500_000, True, False, DEADLINE_AND_BUDGET, "cost"),
)


def main() -> None:
    for model_name, system_name, chips, up_to, any_shape, constraints, objective in CASES:
        model = load_model(model_name)
        hardware = hardware_for(load_system(system_name))
        space = SearchSpace(precisions=("bf16", "fp8"), chips_at_most=up_to, any_shape=any_shape)
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            result = search(model, hardware, chips, 8192, 2048, space, objective=objective,  # type: ignore[arg-type]
                            top=10, tokens=15e12, constraints=constraints)
            runs.append(time.perf_counter() - start)
        wall = min(runs)
        best = result.best[0]
        plan = best["plan"]
        mode = "up to" if up_to else "exactly"
        shape = "any shape" if any_shape else "whole scale-up domains"
        limits = (", 90-day deadline and $50M budget, fewest chip-hours"
                  if constraints.active else "")
        print(f"{model_name} on {mode} {chips:,} x {hardware.chip.name} ({system_name}), seq 8192, batch 2048, "
              f"{shape}{limits}")
        print(f"  plans enumerated {result.plans_enumerated:,}; fit memory {result.plans_fitting:,}; "
              f"timed after exact pruning {result.plans_timed:,}")
        print(f"  search wall time (best of {len(runs)}, top-10 records included): {wall:.3f} s")
        print(f"  plans decided per second: {result.plans_enumerated / wall:,.0f}")
        print(f"  best: {best['chips']:,} chips TP{plan['tp']} PP{plan['pp']} VP{plan['vp']} CP{plan['cp']} "
              f"DP{plan['dp']} mb{plan['micro_batch']} {plan['recompute']} ZeRO-{plan['zero']} "
              f"{plan['precision']} -> step {best['step_time_s']:.2f} s, MFU {100 * best['mfu']:.1f} %, "
              f"{best['time_to_train_s'] / 86400:.1f} days for 15T tokens")
        if constraints.active:
            print(f"  plans meeting the constraints {result.plans_meeting_constraints:,}; "
                  f"best costs ${best['cost_usd'] / 1e6:,.1f} M")


if __name__ == "__main__":
    main()
