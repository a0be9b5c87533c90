"""Benchmark: plans evaluated per second by the vectorised training estimator.

Case (issue #2): llama3-405b on 16,384 H100 (dgx-h100), seq 8192, global batch 2048 sequences.
Enumerates every valid combination of TP, PP, VP, CP, micro-batch, recompute, ZeRO, precision,
SP and overlap flags, then times ``estimate`` on them in one process (best of several repeats).
Prints plans/s and the process' peak resident memory. Run with ``make bench``.
"""

from __future__ import annotations

import resource
import time

import numpy as np

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import estimate

CHIPS = 16_384
SEQ = 8192
GLOBAL_BATCH = 2048


STRUCTURE = {  # parallel layout axes, filtered for validity first
    "tp": (1, 2, 4, 8, 16),
    "pp": (1, 2, 3, 6, 7, 9, 14, 18, 21),  # divisors of 126 layers
    "vp": (1, 2, 3, 7),
    "cp": (1, 2, 4, 8, 16),
    "micro_batch": (1, 2, 4, 8),
}
SETTINGS = {  # every valid layout is crossed with all of these
    "recompute": (0, 1, 2),
    "zero": (0, 1, 2, 3),
    "precision": (1, 2),  # bf16, fp8
    "sp": (0, 1),
    "overlap_tp": (0, 1),
    "overlap_dp": (0, 1),
    "overlap_pp": (0, 1),
    "grad_reduce_bytes": (2, 4),
}


def _grid(axes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    mesh = np.meshgrid(*[np.asarray(v, dtype=np.int64) for v in axes.values()], indexing="ij")
    return {name: m.ravel() for name, m in zip(axes, mesh, strict=True)}


def enumerate_plans(layers: int) -> dict[str, np.ndarray]:
    """Every valid plan of the grid, as arrays (vectorised: no Python object per plan)."""
    layout = _grid(STRUCTURE)
    tp, pp, vp, cp, mb = (layout[k] for k in ("tp", "pp", "vp", "cp", "micro_batch"))
    inner = tp * pp * cp
    dp = CHIPS // inner
    valid = ((CHIPS % inner) == 0) & ((layers % (pp * vp)) == 0) & ((vp == 1) | (pp > 1))
    valid &= (GLOBAL_BATCH % (mb * np.maximum(dp, 1))) == 0
    layout = {k: v[valid] for k, v in layout.items()}
    layout["dp"] = dp[valid]
    settings = _grid(SETTINGS)
    n_layout, n_settings = layout["tp"].size, settings["sp"].size
    plans = {k: np.repeat(v, n_settings) for k, v in layout.items()}
    plans.update({k: np.tile(v, n_layout) for k, v in settings.items()})
    keep = (plans["sp"] == 0) | (plans["tp"] > 1)  # SP only means something with TP
    return {k: v[keep] for k, v in plans.items()}


def main() -> None:
    model = load_model("llama3-405b")
    hardware = hardware_for(load_system("dgx-h100"))
    arrays = enumerate_plans(model.layers)
    batch = PlanBatch.from_arrays(model, global_batch=GLOBAL_BATCH, seq_len=SEQ, **arrays)
    count = len(batch)
    estimate(model, hardware, batch)  # warm-up
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        result = estimate(model, hardware, batch)
        timings.append(time.perf_counter() - start)
    best = min(timings)
    fitting = int(result.fits.sum())
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fastest = int(np.argmin(np.where(result.fits, result.step_time, np.inf)))
    print(f"case: {model.name} on {CHIPS:,} x {hardware.chip.name}, seq {SEQ}, batch {GLOBAL_BATCH}")
    print(f"plans evaluated: {count:,} valid plans ({fitting:,} fit in memory)")
    print(f"estimate time: best {best * 1e3:.1f} ms of {len(timings)} runs "
          f"(median {np.median(timings) * 1e3:.1f} ms)")
    print(f"plans per second (one process): {count / best:,.0f}")
    print(f"peak resident memory of the process: {peak_rss / 2**20:.0f} MiB")
    print("fastest fitting plan: " + ", ".join(f"{k}={int(v[fastest])}" for k, v in arrays.items())
          + f" -> step {result.step_time[fastest]:.2f} s, MFU {100 * result.mfu[fastest]:.1f} %")


def main_moe() -> None:
    """The same measurement on mixture-of-experts plans (issue #4): deepseek-v3 on 2,048 H800,
    every valid layout with an EP axis, all recompute levels, ZeRO stages, bf16 and fp8."""
    from clusterplan.training.search import SearchSpace, _batch, enumerate_plans

    model = load_model("deepseek-v3")
    hardware = hardware_for(load_system("dgx-h800"))
    space = SearchSpace(precisions=("bf16", "fp8"), settings={
        "overlap_tp": False, "overlap_dp": True, "overlap_pp": True, "flash_attention": True,
        "grad_reduce": "fp32", "overlap_ep": True, "routing_gini": 0.0})
    columns = enumerate_plans(model, 2048, 4096, 15360, space)
    batch = _batch(model, columns, 4096, 15360, space)
    estimate(model, hardware, batch)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        estimate(model, hardware, batch)
        timings.append(time.perf_counter() - start)
    best = min(timings)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"case: {model.name} (MoE) on 2,048 x {hardware.chip.name}, seq 4096, batch 15360")
    print(f"plans evaluated: {len(batch):,} valid MoE plans (EP axis included)")
    print(f"plans per second (one process): {len(batch) / best:,.0f}")
    print(f"peak resident memory of the process: {peak_rss / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
    main_moe()
