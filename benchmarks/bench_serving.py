"""Benchmark: request-level serving simulator speed (simulated requests per wall-second).

Case: llama3-70b on one dgx-h100 node as a TP8 replica (fp8 weights and KV cache), Poisson
arrivals of 1,000-token prompts and 200-token outputs (lognormal lengths, CV 0.5). Simulates
2,000 and 20,000 requests with chunked prefill (the default) and with continuous batching (vLLM
V0's prefill-priority loop, which the issue's speed target names) at three loads (20 %, 80 % and
150 % of the analytic saturated rate, ``offline_throughput / 200``), best of 3 each, and times
one ``max_rate_at_slo`` call (p99 TTFT 2 s, p99 TPOT 50 ms, 2,000 requests per trial). One
process, one thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.inference.serving import ServingLoad, max_rate_at_slo, sample, simulate
from clusterplan.inference.step import Deployment, ReplicaModel

ISL, OSL = 1000, 200
TTFT_P99_S, TPOT_P99_S = 2.0, 0.05
REPEATS = 3


def main() -> None:
    replica = ReplicaModel(load_model("llama3-70b"), hardware_for(load_system("dgx-h100")),
                           Deployment(tp=8, weights="fp8", kv_cache="fp8"))
    saturated = float(replica.offline_throughput(ISL, OSL)["output_tokens_per_s"]) / OSL
    print(f"llama3-70b TP8 fp8 on dgx-h100: KV {replica.kv_capacity_tokens:,} tokens, max batch "
          f"{replica.max_batch}, analytic saturated rate {saturated:.2f} req/s")
    for scheduler in ("chunked", "continuous"):
        for requests in (2_000, 20_000):
            for share in (0.2, 0.8, 1.5):
                load = ServingLoad(rate_per_s=share * saturated, requests=requests, input_tokens=ISL,
                                   output_tokens=OSL, length_spread=0.5)
                work = sample(load)
                runs = []
                for _ in range(REPEATS):
                    start = time.perf_counter()
                    result = simulate(replica, work, scheduler=scheduler)
                    runs.append(time.perf_counter() - start)
                best = min(runs)
                s = result.summary()
                print(f"  {scheduler:>10} {requests:>6,} requests at {share:.0%} of saturation: {best:.3f} s "
                      f"({requests / best:,.0f} simulated requests/s, {result.iterations:,} iterations, "
                      f"{result.iterations / best:,.0f} iterations/s); TTFT p99 {s['ttft_p99_s']:.3g} s, "
                      f"TPOT p99 {s['tpot_p99_s'] * 1e3:.1f} ms, {s['output_tokens_per_s']:,.0f} output tok/s")
    load = ServingLoad(rate_per_s=1.0, requests=2_000, input_tokens=ISL, output_tokens=OSL, length_spread=0.5)
    start = time.perf_counter()
    rate = max_rate_at_slo(replica, load, TTFT_P99_S, TPOT_P99_S)
    took = time.perf_counter() - start
    print(f"  max_rate_at_slo (TTFT p99 {TTFT_P99_S} s, TPOT p99 {TPOT_P99_S * 1e3:.0f} ms): {rate:.2f} req/s "
          f"in {took:.3f} s")


if __name__ == "__main__":
    main()
