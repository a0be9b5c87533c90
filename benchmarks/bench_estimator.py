"""Benchmark: plans evaluated per second by the vectorised training estimator.

Case (issue #2): llama3-405b on 16,384 H100 (dgx-h100), seq 8192, global batch 2048 sequences.
Enumerates every valid combination of TP, PP, VP, CP, micro-batch, recompute, ZeRO, precision,
SP and overlap flags, then times ``estimate`` on them in one process (best of several repeats).
Prints plans/s and the process' peak resident memory. Run with ``make bench``.
"""

from __future__ import annotations

import itertools
import resource
import time

import numpy as np

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import estimate

CHIPS = 16_384
SEQ = 8192
GLOBAL_BATCH = 2048


def enumerate_plans(layers: int) -> dict[str, np.ndarray]:
    grid = itertools.product(
        (1, 2, 4, 8),  # tp
        (1, 2, 3, 6, 7, 9, 14, 18),  # pp (divisors of 126)
        (1, 2, 3, 7),  # vp
        (1, 2, 4, 8, 16),  # cp
        (1, 2, 4),  # micro-batch
        (0, 1, 2),  # recompute
        (0, 1, 2, 3),  # zero
        (1, 2),  # precision bf16, fp8
        (0, 1),  # sp
        (0, 1),  # overlap_tp
        (0, 1),  # overlap_dp
    )
    rows = np.array(list(grid), dtype=np.int64)
    tp, pp, vp, cp, mb = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    inner = tp * pp * cp
    dp = CHIPS // inner
    valid = ((CHIPS % inner) == 0) & ((layers % (pp * vp)) == 0) & ((vp == 1) | (pp > 1))
    valid &= (GLOBAL_BATCH % (mb * np.maximum(dp, 1))) == 0
    valid &= (rows[:, 8] == 0) | (tp > 1)
    rows, dp = rows[valid], dp[valid]
    names = ("tp", "pp", "vp", "cp", "micro_batch", "recompute", "zero", "precision", "sp",
             "overlap_tp", "overlap_dp")
    arrays = {name: rows[:, i] for i, name in enumerate(names)}
    arrays["dp"] = dp
    return arrays


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


if __name__ == "__main__":
    main()
