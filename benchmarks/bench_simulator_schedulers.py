"""Benchmark: serving simulator speed per scheduler, simulated requests per wall-second (issue #7).

One replica with a toy but realistic step model (a 70B-class model on one accelerator): decode
25 ms + 0.05 ms per sequence + 1 ns per KV token, prefill 0.1 ms per prompt token, a mixed step the
sum of both; 200,000 KV tokens, batch up to 256. Requests of 512 prompt and 128 output tokens.
For each scheduler (continuous batching, chunked prefill, static batches, and disaggregated with one
prefill and one decode replica): an offline run (every request queued at t = 0) and Poisson
arrivals at 50 %, 90 % and 120 % of the saturated rate that the offline run measures, with output
lengths spread (CV 0.3) so that sequences join and leave the batch at every step. Best of 3 wall
times, one process, one thread.
Target: >= 50,000 simulated requests per wall-second for the continuous-batching replica.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time
from dataclasses import dataclass

from clusterplan.inference import workload as wl
from clusterplan.inference.serving import ServingResult, simulate

REQUESTS = 50_000
ISL, OSL = 512, 128
REPEATS = 3
TARGET = 50_000.0


@dataclass
class ToyReplica:
    kv_capacity_tokens: int = 200_000
    max_batch: int = 256

    def prefill_time(self, tokens: int, context: int) -> float:
        return 1e-4 * tokens

    def decode_time(self, batch: int, total_context: int) -> float:
        return 0.025 + 5e-5 * batch + 1e-9 * total_context

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        return self.decode_time(batch, total_context) + 1e-4 * prefill_tokens

    def kv_transfer_time(self, tokens: int) -> float:
        return 2e-6 * tokens


def timed(workload: wl.Workload, scheduler: str) -> tuple[float, ServingResult]:
    best, result = float("inf"), None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = simulate(ToyReplica(), workload, scheduler)
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def main() -> None:
    print(f"{REQUESTS:,} requests of {ISL}+{OSL} tokens on one replica (decode 25 ms + 0.05 ms/seq, prefill "
          f"0.1 ms/token, batch <= 256); best of {REPEATS}, one core")
    worst: dict[str, float] = {}
    for scheduler in ("continuous", "chunked", "static", "disaggregated"):
        seconds, offline = timed(wl.offline(REQUESTS, ISL, OSL, output_spread=0.3), scheduler)
        saturated = offline.requests_per_s
        cases = [("offline", seconds, offline)]
        for share in (0.5, 0.9, 1.2):
            work = wl.poisson(share * saturated, REQUESTS, ISL, OSL, seed=1, output_spread=0.3)
            cases.append((f"Poisson {share:.0%} of saturation", *timed(work, scheduler)))
        for name, seconds, result in cases:
            rate = REQUESTS / seconds
            worst[scheduler] = min(worst.get(scheduler, float("inf")), rate)
            print(f"  {scheduler:<13} {name:<28} {seconds:6.3f} s  {rate:>9,.0f} requests/s  "
                  f"{result.iterations / seconds:>9,.0f} steps/s | {result.requests_per_s:6.2f} req/s simulated, "
                  f"mean batch {result.mean_batch:5.1f}, TTFT p99 {result.percentile('ttft', 99):8.3f} s, "
                  f"TPOT p99 {result.percentile('tpot', 99) * 1e3:5.1f} ms")
    verdict = "meets" if worst["continuous"] >= TARGET else "MISSES"
    print(f"continuous batching, slowest case: {worst['continuous']:,.0f} simulated requests per wall-second "
          f"[{verdict} the {TARGET:,.0f} target]; chunked prefill: {worst['chunked']:,.0f}; static: "
          f"{worst['static']:,.0f}; disaggregated: {worst['disaggregated']:,.0f}")


if __name__ == "__main__":
    main()
