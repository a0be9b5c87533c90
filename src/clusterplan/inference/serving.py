"""Request-level serving simulator: one replica, continuous batching with chunked prefill.

The engine is simulated one iteration (engine step) at a time, as the schedulers of Orca (Yu et
al., OSDI 2022: iteration-level scheduling, requests join and leave the batch between steps),
vLLM (Kwon et al., SOSP 2023: paged KV cache, admission by free KV blocks) and Sarathi-Serve
(Agrawal et al., OSDI 2024: chunked prefill, prompt chunks piggybacked on decode steps) do. Each
iteration:

1. *Admission*, first come first served: waiting requests (arrived, not admitted) join while the
   batch holds fewer than ``max_batch`` sequences and the KV cache has room for the request's
   whole prompt + output. Reserving the full length at admission means a sequence never has to be
   preempted or swapped (vLLM would admit more optimistically and preempt under pressure); the
   first request that does not fit blocks the ones behind it (strict FCFS, no skipping).
2. *One step*: every sequence whose prompt is prefilled decodes one token, and up to
   ``chunk_tokens`` prompt tokens of admitted, not yet prefilled sequences are prefilled (FCFS; a
   prompt longer than the chunk continues over several iterations). The step takes
   ``mixed_time`` when it does both, else ``decode_time`` or ``prefill_time``.
3. A sequence's first output token comes at the end of the iteration that completes its prefill;
   each later iteration adds one; after ``output_tokens`` tokens it finishes and frees its KV.

When nothing is running or admissible, the clock jumps to the next arrival. Closed-loop
workloads (``concurrency`` set) issue their first
``concurrency`` requests at t = 0 and the next one whenever a request finishes.

Decode context: a decoding sequence counts its prompt plus the tokens it has produced so far,
the one being decoded included (``input + 1`` in the step after its first token).

:func:`max_rate_at_slo` finds the highest Poisson arrival rate at which the replica meets p99
TTFT and TPOT targets, by bracketing and bisection over :class:`ServingLoad`.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from clusterplan.errors import SpecError
from clusterplan.inference.engine import StepModel
from clusterplan.inference.workload import Workload, poisson
from clusterplan.specs._base import Spec

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

METRICS = ("ttft", "tpot", "e2e")
#: Bound on the memo of step times kept during one simulation (entries).
_CACHE_LIMIT = 1 << 20


# ---------------------------------------------------------------------------------------------- workload spec


class ServingLoad(Spec):
    """A Poisson stream of requests with lognormal lengths, as a spec (see :func:`sample`).

    Assumes requests arrive as a Poisson process of ``rate_per_s`` (independent exponential gaps)
    and that prompt and output lengths are independent lognormals with the given means and
    coefficient of variation ``length_spread`` (0: every request has exactly the mean lengths).
    """

    rate_per_s: float = Field(gt=0, allow_inf_nan=False, description="Poisson arrival rate, requests/s")
    requests: int = Field(default=2000, ge=1, le=1_000_000)
    input_tokens: int = Field(ge=1, description="mean prompt length, tokens")
    output_tokens: int = Field(ge=1, description="mean generated length, tokens")
    length_spread: float = Field(default=0.0, ge=0, le=3, description="coefficient of variation of the lengths")
    seed: int = Field(default=0, ge=0)


def sample(load: ServingLoad) -> Workload:
    """Draw ``load.requests`` requests (:func:`~clusterplan.inference.workload.poisson`),
    deterministic for ``load.seed``. Arrival gaps are one stream of exponentials scaled by the
    rate, so two loads that differ only in rate see the same requests at proportionally scaled
    times (common random numbers keep a rate search from chasing sampling noise)."""
    return poisson(load.rate_per_s, load.requests, load.input_tokens, load.output_tokens, seed=load.seed,
                   input_spread=load.length_spread, output_spread=load.length_spread)


# ---------------------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class ServingResult:
    """Per-request times of one simulation (arrays indexed like the workload) and engine totals."""

    arrival_s: FloatArray
    first_token_s: FloatArray
    finish_s: FloatArray
    input_tokens: IntArray
    output_tokens: IntArray
    iterations: int
    busy_s: float
    #: Sequences in the batch (decoding + prefilling), averaged over iterations.
    mean_batch: float

    @property
    def ttft_s(self) -> FloatArray:
        """Time to first token: arrival to the end of the iteration that completes the prefill."""
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> FloatArray:
        """Time per output token after the first; NaN for one-token outputs."""
        with np.errstate(divide="ignore", invalid="ignore"):
            tpot = (self.finish_s - self.first_token_s) / (self.output_tokens - 1)
        return np.where(self.output_tokens > 1, tpot, np.nan)

    @property
    def e2e_s(self) -> FloatArray:
        return self.finish_s - self.arrival_s

    def percentile(self, metric: str, q: float) -> float:
        """``q``-th percentile (0..100) of ``ttft``, ``tpot`` or ``e2e`` in seconds (NaNs ignored;
        NaN if every value is NaN)."""
        if metric not in METRICS:
            raise SpecError("metric", metric, f"must be one of {', '.join(METRICS)}")
        values = {"ttft": self.ttft_s, "tpot": self.tpot_s, "e2e": self.e2e_s}[metric]
        values = values[~np.isnan(values)]
        return float(np.percentile(values, q)) if values.size else math.nan

    @property
    def span_s(self) -> float:
        """First arrival to last finish."""
        return float(self.finish_s.max() - self.arrival_s.min())

    @property
    def output_tokens_per_s(self) -> float:
        span = self.span_s
        return float(self.output_tokens.sum()) / span if span > 0 else math.inf

    @property
    def requests_per_s(self) -> float:
        span = self.span_s
        return len(self.arrival_s) / span if span > 0 else math.inf

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in ("ttft", "tpot"):
            for q in (50, 90, 99):
                out[f"{metric}_p{q}_s"] = self.percentile(metric, q)
        out["output_tokens_per_s"] = self.output_tokens_per_s
        out["requests_per_s"] = self.requests_per_s
        out["mean_batch"] = self.mean_batch
        return out


# ---------------------------------------------------------------------------------------------- simulation


def simulate(replica: StepModel, workload: Workload, *, chunk_tokens: int = 8192) -> ServingResult:
    """Serve ``workload`` on one replica (see module doc for the scheduling rules).

    Raises :class:`SpecError` (field ``input_tokens``) if a request's prompt + output exceeds the
    whole KV cache, since such a request could never be admitted.
    """
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int | np.integer) or chunk_tokens < 1:
        raise SpecError("chunk_tokens", chunk_tokens, "must be a whole number of tokens >= 1")
    arrival = np.array(workload.arrival_s, dtype=np.float64, ndmin=1)
    inputs = np.asarray(workload.input_tokens, dtype=np.int64)
    outputs = np.asarray(workload.output_tokens, dtype=np.int64)
    n = len(arrival)
    if n == 0 or len(inputs) != n or len(outputs) != n:
        raise SpecError("workload", n, "needs at least one request and arrays of one length")
    if np.any(np.diff(arrival) < 0):
        raise SpecError("arrival_s", "array", "arrival times must be sorted")
    capacity = int(replica.kv_capacity_tokens)
    max_batch = int(replica.max_batch)
    need_arr = inputs + outputs
    too_big = np.flatnonzero(need_arr > capacity)
    if too_big.size:
        i = int(too_big[0])
        raise SpecError("input_tokens", int(inputs[i]),
                        f"request {i}: prompt + output = {int(need_arr[i])} tokens exceed the replica's whole KV "
                        f"cache of {capacity} tokens, so it can never be admitted")
    concurrency = workload.concurrency
    released = n if concurrency is None else min(n, int(concurrency))
    if concurrency is not None:
        arrival[:released] = 0.0

    arr: list[float] = arrival.tolist()
    ins: list[int] = inputs.tolist()
    outs: list[int] = outputs.tolist()
    need: list[int] = need_arr.tolist()
    first = [math.nan] * n
    fin = [math.nan] * n
    filled = [0] * n  # prompt tokens prefilled so far

    # Step times repeat (same batch and context) whenever the load pattern repeats, most of all at
    # low load where requests run alone; memoising makes those iterations nearly free.
    decode_cache: dict[int, float] = {}
    prefill_cache: dict[tuple[int, int], float] = {}
    key_stride = max_batch + 1

    now = 0.0
    busy = 0.0
    iteration = 0
    batch_sum = 0
    nxt = 0  # next request to admit (FCFS: admission follows arrival order)
    kv_used = 0
    active = 0  # admitted and not finished
    decoding = 0
    decode_context = 0  # running sum over decoding sequences of prompt + tokens so far
    finished = 0
    prefill_queue: deque[int] = deque()
    finish_at: dict[int, list[int]] = {}  # iteration -> sequences finishing at its end
    finish_heap: list[int] = []

    def finish(idx: int) -> None:
        nonlocal kv_used, active, finished, released
        fin[idx] = now
        kv_used -= need[idx]
        active -= 1
        finished += 1
        if released < n:  # closed loop: a client sends its next request as soon as one returns
            arr[released] = now
            released += 1

    while finished < n:
        while (nxt < released and arr[nxt] <= now and active < max_batch
               and kv_used + need[nxt] <= capacity):
            kv_used += need[nxt]
            active += 1
            prefill_queue.append(nxt)
            nxt += 1
        if active == 0:
            now = max(now, arr[nxt])
            continue

        if not prefill_queue:
            # Decode-only stretch: until the next finish or the next admissible arrival nothing
            # but the context changes, so run those iterations in a tight loop.
            target = finish_heap[0]
            admissible = nxt < released and active < max_batch and kv_used + need[nxt] <= capacity
            limit = arr[nxt] if admissible else math.inf
            start = iteration
            while iteration + 1 < target and now < limit:
                key = decode_context * key_stride + decoding
                dt = decode_cache.get(key)
                if dt is None:
                    dt = replica.decode_time(decoding, decode_context)
                    if len(decode_cache) >= _CACHE_LIMIT:
                        decode_cache.clear()
                    decode_cache[key] = dt
                now += dt
                busy += dt
                iteration += 1
                batch_sum += decoding
                decode_context += decoding
            if iteration > start:
                continue  # back to admission: a request may have arrived during the stretch

        budget = chunk_tokens
        prefill_tokens = 0
        prefill_context = 0
        prefilling = 0
        completed = 0
        for idx in prefill_queue:
            take = min(ins[idx] - filled[idx], budget)
            prefill_context += filled[idx]
            filled[idx] += take
            prefill_tokens += take
            budget -= take
            prefilling += 1
            if filled[idx] == ins[idx]:
                completed += 1
            if budget == 0:
                break

        if decoding and prefill_tokens:
            dt = replica.mixed_time(prefill_tokens, prefill_context, decoding, decode_context)
        elif decoding:
            key = decode_context * key_stride + decoding
            cached = decode_cache.get(key)
            dt = replica.decode_time(decoding, decode_context) if cached is None else cached
            decode_cache[key] = dt
        else:
            pkey = (prefill_tokens, prefill_context)
            cached = prefill_cache.get(pkey)
            dt = replica.prefill_time(prefill_tokens, prefill_context) if cached is None else cached
            if len(prefill_cache) < _CACHE_LIMIT:
                prefill_cache[pkey] = dt
        now += dt
        busy += dt
        iteration += 1
        batch_sum += decoding + prefilling
        decode_context += decoding

        if finish_heap and finish_heap[0] == iteration:
            heapq.heappop(finish_heap)
            for idx in finish_at.pop(iteration):
                decoding -= 1
                decode_context -= need[idx]
                finish(idx)
        for _ in range(completed):
            idx = prefill_queue.popleft()
            first[idx] = now
            if outs[idx] == 1:
                finish(idx)
                continue
            decoding += 1
            decode_context += ins[idx] + 1
            done = iteration + outs[idx] - 1
            if done not in finish_at:
                finish_at[done] = []
                heapq.heappush(finish_heap, done)
            finish_at[done].append(idx)

    return ServingResult(
        arrival_s=np.asarray(arr, dtype=np.float64), first_token_s=np.asarray(first, dtype=np.float64),
        finish_s=np.asarray(fin, dtype=np.float64), input_tokens=inputs.copy(), output_tokens=outputs.copy(),
        iterations=iteration, busy_s=busy, mean_batch=batch_sum / iteration if iteration else 0.0)


# ---------------------------------------------------------------------------------------------- SLO search


def meets_slo(result: ServingResult, ttft_p99_s: float, tpot_p99_s: float) -> bool:
    """Whether p99 TTFT and p99 TPOT are within the targets (one-token outputs have no TPOT)."""
    tpot = result.percentile("tpot", 99)
    return result.percentile("ttft", 99) <= ttft_p99_s and (math.isnan(tpot) or tpot <= tpot_p99_s)


def _saturated_rate(replica: StepModel, load: ServingLoad) -> float | None:
    offline: Any = getattr(replica, "offline_throughput", None)
    if offline is None:
        return None
    tokens = float(np.asarray(offline(load.input_tokens, load.output_tokens)["output_tokens_per_s"]))
    return tokens / load.output_tokens


def max_rate_at_slo(replica: StepModel, workload: ServingLoad, ttft_p99_s: float, tpot_p99_s: float, *,
                    tolerance: float = 0.05, chunk_tokens: int = 8192, max_doublings: int = 12) -> float:
    """Highest arrival rate (requests/s) at which ``replica`` meets both p99 targets on ``workload``
    with its rate replaced (all other fields, the seed included, fixed).

    Starts from the analytic saturated rate (``offline_throughput`` output tokens/s over the mean
    output length) when the replica has one, else from the rate of one request served alone;
    doubles until the SLO is missed, then bisects until the bracket is within ``tolerance``
    (relative) and returns its lower end. Returns 0.0 if the SLO is missed even at 1/100 of that
    starting rate. If it is still met after ``max_doublings`` doublings (a loose SLO on a finite
    workload), returns the last rate tried.

    Because :func:`sample` scales one set of exponential gaps by the rate, a looser SLO never gives
    a lower rate: at every rate tried it passes whenever the tighter one does.
    """
    if not 0 < tolerance < 1:
        raise SpecError("tolerance", tolerance, "must be between 0 and 1 (relative)")

    def ok(rate: float) -> bool:
        result = simulate(replica, sample(workload.model_copy(update={"rate_per_s": rate})),
                          chunk_tokens=chunk_tokens)
        return meets_slo(result, ttft_p99_s, tpot_p99_s)

    start = _saturated_rate(replica, workload)
    if start is None or not math.isfinite(start) or start <= 0:
        isl, osl = workload.input_tokens, workload.output_tokens
        alone = replica.prefill_time(isl, 0) + (osl - 1) * replica.decode_time(1, isl + osl // 2)
        start = 1.0 / alone
    if not ok(start / 100):
        return 0.0
    lo, hi = start / 100, start
    for _ in range(max_doublings):
        if not ok(hi):
            break
        lo, hi = hi, hi * 2
    else:
        return lo
    while hi - lo > tolerance * lo:
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo
