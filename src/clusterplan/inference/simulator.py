"""Request-level discrete-event simulator of serving replicas (issue #7, item 2).

A replica is known only through a :class:`~clusterplan.inference.engine.StepModel`: how long its
engine steps take and how many KV-cache tokens it holds. The simulator advances one engine STEP at a
time (a decode step gives every running sequence one token); per-request work happens only when a
request arrives, is admitted, finishes a prefill, finishes or is preempted, never per token. Finish
times are kept in buckets keyed by the decode-step count at which a sequence ends, so a decode step
costs O(1) Python work plus its finishers, whatever the batch.

Conventions (all schedulers)
----------------------------
* A prefill over a prompt of ``p`` tokens yields the first output token at the end of its step; the
  sequence then holds ``p`` tokens of KV. Each decode step writes the KV of the last token and yields
  the next, so a sequence that has produced ``k`` tokens holds ``p + k - 1``; a request with ``o``
  output tokens needs ``o - 1`` decode steps after its prefill and at most ``p + o - 1`` KV tokens.
* ``decode_time(batch, total_context)`` gets the decoding sequences and the KV they hold before the
  step; ``prefill_time(tokens, context)`` the prompt tokens of the step and what those sequences
  already hold (0 except for later chunks of a chunked prefill).
* TTFT = first token - arrival; TPOT = (completion - first token) / (o - 1), NaN when ``o == 1``;
  E2E = completion - arrival. Tokens stream: a request completes at the step producing its last token.
* KV admission (``admission``): ``"reserve"`` (default) admits a request only if its prompt plus its
  whole output (``p + o`` tokens) fit in the KV not already reserved, so decode never runs out;
  ``"optimistic"`` (vLLM-like) admits it if its prompt fits with one token of headroom per admitted
  sequence, and when a decode step would overflow the KV it preempts by *recompute*: the newest
  admitted request is evicted, its KV dropped, and it goes back to the front of the queue; when
  re-admitted it prefills its prompt plus the tokens it had generated (``p + k``) and continues.
  The oldest admitted request is never evicted while others run, so every request completes.
  Queues are first come, first served (a head that does not fit blocks those behind it).
* Engine limit: at most ``max_batch`` (the model's, or the smaller ``max_batch`` argument) sequences
  hold KV at once (decoding or prefilling).
* ``prefill_time(tokens, 0)`` is called with the prompts of all the requests a prefill step admits
  together (up to ``max_prefill_tokens``, default 8192 like vLLM's and TensorRT-LLM's token
  budgets; a static batch is prefilled whole): the step model sees their total, not one prompt.
* Step times are memoised (decode by batch and context, prefill from empty by its tokens), so a
  StepModel must be a pure function of its arguments.
* Inter-token latency (``itl_s_*`` in the summary) is weighted by tokens: each decode step counts
  once per sequence it serves, with the time since the previous decode step (since the first
  token for sequences that just joined an idle replica); continuous batching's prefill steps
  show up there as stalls.

Schedulers
----------
``static``
    Fixed batches. When the replica is idle it dispatches a batch once ``max_batch`` requests wait,
    or the oldest has waited ``batch_timeout_s``, or no further request can arrive. The batch (up to
    ``max_batch`` requests, first come first served) is prefilled in one step, then decoded until its
    longest request ends; finished sequences stay in the batch as padding (the batch size stays, and
    every slot holds its prompt plus the longest output's KV: the batch must fit the KV that way,
    ``sum(p) + batch * max(o) <= capacity``), and nothing joins until it ends.
``continuous``
    Iteration-level batching with prefill priority (vLLM V0's default): before each step, waiting
    requests are admitted while KV, ``max_batch`` and ``max_prefill_tokens`` allow; if any were, the
    step is a prefill step over all their prompts (decodes wait), else a decode step of all running.
``chunked``
    Continuous batching with chunked prefill (Sarathi-Serve, vLLM's chunked prefill): each step
    decodes all running sequences and prefills up to ``chunk_tokens`` prompt tokens, continuing the
    partially prefilled prompts first (in admission order), then admitting waiting requests into the
    remaining budget; the step takes ``mixed_time(prefill_tokens, prefill_context, batch, context)``
    (``decode_time`` / ``prefill_time`` when one side is empty). A prompt's KV counts as held from
    its first chunk.
``disaggregated``
    ``prefill_replicas`` prefill replicas (model ``prefill_model``, default ``model``) serve one
    first-come-first-served queue: a free replica takes every waiting prompt up to
    ``max_prefill_tokens`` (and its KV capacity and ``max_batch``) into one prefill step. The KV then
    moves to a decode replica in ``prefill_model.kv_transfer_time(p)`` (transfers do not contend);
    the first token reaches the user when the transfer ends, so TTFT = queueing + prefill +
    transfer. ``decode_replicas`` decode replicas (``model``) run continuous batching of decode steps
    only, the transferred requests routed by ``router``; a decode replica that preempts recomputes
    the evicted request's KV itself with a prefill step. Requests with one output token end at
    their first token and never reach a decode replica.

Fleet and router
----------------
``replicas > 1`` simulates that many identical replicas behind a router. ``round_robin`` deals
arrivals in turn and simulates each replica on its own; ``least_loaded`` sends each arrival to the
replica with the fewest unfinished requests at that moment (ties to the lowest index), advancing the
replicas to the arrival time first. Closed-loop workloads split the clients evenly across replicas
(each replica runs its own closed loop over its share of the requests). Metrics are merged over all
requests.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clusterplan.errors import SpecError
from clusterplan.inference.engine import StepModel
from clusterplan.inference.workload import Workload

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

SCHEDULERS = ("static", "continuous", "chunked", "disaggregated")
ROUTERS = ("round_robin", "least_loaded")
ADMISSIONS = ("reserve", "optimistic")
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
_INF = math.inf
#: Entries a step-time memo holds before it is emptied (bounds memory on huge runs).
_CACHE_LIMIT = 1 << 20


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ServingResult:
    """Per-request outcomes (arrays in workload order) and the summary of a simulation.

    ``arrival_s`` is when each request was issued (the workload's arrival, or for a closed loop the
    time a client sent it). ``kv_time_s`` / ``kv_utilisation`` is the KV-cache utilisation (tokens held
    / capacity, mean over replicas) averaged over ``kv_series_points`` equal intervals from the first
    arrival to the last completion (``kv_time_s`` holds their starts). ``stats`` holds the engine-side
    counters; ``summary`` everything, see :meth:`summarise`.
    """

    scheduler: str
    replicas: int
    arrival_s: FloatArray
    input_tokens: IntArray
    output_tokens: IntArray
    first_token_s: FloatArray
    completion_s: FloatArray
    ttft_s: FloatArray
    tpot_s: FloatArray
    e2e_s: FloatArray
    preemptions: IntArray
    replica: IntArray
    kv_time_s: FloatArray
    kv_utilisation: FloatArray
    stats: dict[str, float]
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        """First arrival to last completion."""
        return float(self.completion_s.max() - self.arrival_s.min())

    def meets_slo(self, slo_ttft_s: float | None = None, slo_tpot_s: float | None = None) -> NDArray[np.bool_]:
        """Requests whose TTFT <= ``slo_ttft_s`` and TPOT <= ``slo_tpot_s`` (no TPOT for one-token outputs)."""
        ok = np.ones(self.requests, dtype=bool)
        if slo_ttft_s is not None:
            ok &= self.ttft_s <= slo_ttft_s
        if slo_tpot_s is not None:
            ok &= np.isnan(self.tpot_s) | (self.tpot_s <= slo_tpot_s)
        return ok

    def summarise(self, slo_ttft_s: float | None = None, slo_tpot_s: float | None = None) -> dict[str, float]:
        """Summary: percentiles, throughput, goodput under the SLO (``None``: no bound) and ``stats``.

        Keys: ``requests, duration_s, requests_per_s, throughput_output_tokens_per_s,
        throughput_total_tokens_per_s``; ``{ttft,tpot,e2e}_s_{mean,p50,p90,p99}``; ``slo_ttft_s,
        slo_tpot_s`` (inf when unbounded), ``slo_attainment`` (fraction meeting both),
        ``goodput_requests_per_s, goodput_output_tokens_per_s`` (those meeting both, over the whole
        duration); then ``stats``: ``max_concurrent_sequences`` (most sequences holding KV on one
        replica), ``mean_running_sequences`` (time mean per replica), ``mean_in_system`` (time mean of
        requests arrived and not finished, whole system), ``kv_utilisation_mean`` (time mean over the
        duration, mean over replicas), ``kv_utilisation_max``, ``preemptions``, ``steps``.
        """
        duration = self.duration_s
        per_s = (1.0 / duration) if duration > 0 else math.nan
        out_tokens = float(self.output_tokens.sum())
        total_tokens = out_tokens + float(self.input_tokens.sum())
        ok = self.meets_slo(slo_ttft_s, slo_tpot_s)
        summary: dict[str, float] = {
            "requests": float(self.requests),
            "duration_s": duration,
            "requests_per_s": self.requests * per_s,
            "throughput_output_tokens_per_s": out_tokens * per_s,
            "throughput_total_tokens_per_s": total_tokens * per_s,
        }
        for name, values in (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s), ("e2e_s", self.e2e_s)):
            finite = values[~np.isnan(values)]
            summary[f"{name}_mean"] = float(finite.mean()) if finite.size else math.nan
            for key, q in PERCENTILES.items():
                summary[f"{name}_{key}"] = float(np.percentile(finite, q)) if finite.size else math.nan
        summary["slo_ttft_s"] = math.inf if slo_ttft_s is None else float(slo_ttft_s)
        summary["slo_tpot_s"] = math.inf if slo_tpot_s is None else float(slo_tpot_s)
        summary["slo_attainment"] = float(ok.mean())
        summary["goodput_requests_per_s"] = float(ok.sum()) * per_s
        summary["goodput_output_tokens_per_s"] = float(self.output_tokens[ok].sum()) * per_s
        summary.update(self.stats)
        return summary

    def record(self) -> dict[str, Any]:
        """The summary as JSON-ready nested data (percentiles grouped: ``ttft_s: {p50, p90, p99, mean}``)."""
        s = self.summary or self.summarise()
        nested: dict[str, Any] = {"scheduler": self.scheduler, "replicas": self.replicas}
        for key, value in s.items():
            head, _, tail = key.rpartition("_")
            if head in ("ttft_s", "tpot_s", "e2e_s") and tail in ("mean", *PERCENTILES):
                nested.setdefault(head, {})[tail] = value
            elif key in ("requests", "max_concurrent_sequences", "preemptions", "steps"):
                nested[key] = int(value)
            else:
                nested[key] = value
        return nested


# ---------------------------------------------------------------------------------------------- engines


class _Requests:
    """Per-request state shared by the engines, as Python lists (fast scalar access in the loops)."""

    def __init__(self, workload: Workload) -> None:
        n = len(workload)
        self.n = n
        self.inp: list[int] = workload.input_tokens.tolist()
        self.out: list[int] = workload.output_tokens.tolist()
        self.issue: list[float] = workload.arrival_s.tolist()
        self.gen = [0] * n  # tokens generated when last joined decode (or when preempted)
        self.join = [0] * n  # engine decode-step count when it joined decode
        self.fin = [-1] * n  # decode-step count at which it ends (-1: not decoding)
        self.first = [math.nan] * n
        self.done = [math.nan] * n
        self.npre = [0] * n
        self.ready = [False] * n  # KV present on arrival (disaggregated decode replicas)
        self.replica = [0] * n


@dataclass
class _Config:
    cap: int
    max_batch: int
    reserve: bool
    prefill_budget: float
    chunk_tokens: int
    batch_timeout_s: float
    #: Memos of the model's step times (a StepModel is a pure function of its arguments): decode
    #: keyed by ``context * (max_batch + 1) + batch``, prefill from empty by its tokens.
    decode_cache: dict[int, float] = field(default_factory=dict)
    prefill_cache: dict[int, float] = field(default_factory=dict)


class _Engine:
    """One replica: its queue of requests (global ids, arrival times in order) and its counters."""

    def __init__(self, index: int, model: StepModel, reqs: _Requests, cfg: _Config, ids: list[int],
                 arrivals: list[float], concurrency: int | None, final: bool) -> None:
        self.index = index
        self.model = model
        self.reqs = reqs
        self.cap = cfg.cap
        self.max_batch = cfg.max_batch
        self.reserve = cfg.reserve
        self.pf_budget = cfg.prefill_budget
        self.chunk = cfg.chunk_tokens
        self.timeout = cfg.batch_timeout_s
        self.dcache, self.pcache, self.stride = cfg.decode_cache, cfg.prefill_cache, cfg.max_batch + 1
        self.ids = ids
        self.arr = arrivals
        self.final = final  # no more pushes will come
        self.cl_next = len(ids)  # closed loop: next request to issue on a completion
        if concurrency is not None:
            self.cl_next = min(concurrency, len(ids))
            for i in range(len(ids)):
                self.arr[i] = 0.0 if i < self.cl_next else _INF
                reqs.issue[ids[i]] = self.arr[i]
        for r in ids:
            reqs.replica[r] = index
        self.nxt = 0
        self.t = 0.0
        self.dstep = 0
        self.waiting: deque[int] = deque()
        self.admitted: dict[int, None] = {}
        self.buckets: dict[int, list[int]] = {}
        self.n_adm = 0
        self.n_sys = 0
        self.n_done = 0
        self.dec_ctx = 0
        self.reserved = 0
        self.last_done: list[float] = []  # completion times of the last step/batch (for load)
        self.ts: list[float] = [0.0]  # step boundaries and the KV-token-seconds integral there
        self.kvc: list[float] = [0.0]
        self.kv_area = 0.0
        self.run_area = 0.0
        self.sys_area = 0.0
        self.kv_peak = 0
        self.max_conc = 0
        self.steps = 0
        self.last_dec = 0.0  # end of the last step that gave decoding sequences a token
        self.itl_gap: list[float] = []  # per decode step: time since the previous token ...
        self.itl_n: list[int] = []  # ... and the sequences that waited it

    def push(self, r: int, t: float) -> None:
        self.ids.append(r)
        self.arr.append(t)
        self.cl_next = len(self.ids)
        self.reqs.replica[r] = self.index

    def load(self, t: float) -> int:
        """Unfinished requests routed here, as of time ``t``."""
        future = len(self.last_done) - bisect_right(self.last_done, t)
        return len(self.ids) - self.n_done + future

    def advance(self, t_limit: float) -> None:
        """Run every step that starts before ``t_limit`` (``inf``: until no work is left)."""
        raise NotImplementedError


class _Continuous(_Engine):
    """``continuous`` scheduling; requests marked ``ready`` (disaggregated decode) skip the prefill."""

    def advance(self, t_limit: float) -> None:
        R = self.reqs
        inp, out, gen, join, fin, first, done = R.inp, R.out, R.gen, R.join, R.fin, R.first, R.done
        issue, npre, ready = R.issue, R.npre, R.ready
        ids, arr = self.ids, self.arr
        nids = len(ids)
        nxt, cl_next, t, dstep = self.nxt, self.cl_next, self.t, self.dstep
        waiting, admitted, buckets = self.waiting, self.admitted, self.buckets
        n_adm, n_sys, n_done, dec_ctx, reserved = self.n_adm, self.n_sys, self.n_done, self.dec_ctx, self.reserved
        cap, B, reserve, budget = self.cap, self.max_batch, self.reserve, self.pf_budget
        prefill_time, decode_time = self.model.prefill_time, self.model.decode_time
        dcache, pcache, stride = self.dcache, self.pcache, self.stride
        ts, kvc, itl_gap, itl_n, last_dec = self.ts, self.kvc, self.itl_gap, self.itl_n, self.last_dec
        kv_area, run_area, sys_area = self.kv_area, self.run_area, self.sys_area
        kv_peak, max_conc, steps = self.kv_peak, self.max_conc, self.steps
        last_done = self.last_done
        while t < t_limit:
            while nxt < nids and arr[nxt] <= t:
                waiting.append(ids[nxt])
                sys_area += t - arr[nxt]
                nxt += 1
                n_sys += 1
            if waiting and n_adm < B:
                new: list[int] = []
                tokens = 0
                stalled = n_adm  # decoding sequences a prefill step would stall
                while waiting and n_adm < B:
                    r = waiting[0]
                    g = gen[r]
                    p = inp[r]
                    need = p + out[r]
                    if reserve:
                        if reserved + need > cap:
                            break
                    elif dec_ctx + tokens + p + g + n_adm + 1 > cap:
                        break
                    if ready[r]:  # KV transferred in: joins decode now
                        if not stalled:
                            last_dec = t
                        waiting.popleft()
                        dec_ctx += p + g - 1
                        join[r] = dstep
                        f = dstep + out[r] - g
                        fin[r] = f
                        bucket = buckets.get(f)
                        if bucket is None:
                            buckets[f] = [r]
                        else:
                            bucket.append(r)
                    else:
                        q = p + g
                        if new and tokens + q > budget:
                            break
                        waiting.popleft()
                        new.append(r)
                        tokens += q
                    reserved += need
                    admitted[r] = None
                    n_adm += 1
                if n_adm > max_conc:
                    max_conc = n_adm
                if new:  # prefill step
                    dt = pcache.get(tokens)
                    if dt is None:
                        dt = prefill_time(tokens, 0)
                        if len(pcache) >= _CACHE_LIMIT:
                            pcache.clear()
                        pcache[tokens] = dt
                    t += dt
                    steps += 1
                    dec_ctx += tokens
                    if dec_ctx > kv_peak:
                        kv_peak = dec_ctx
                    kv_area += dec_ctx * dt
                    run_area += n_adm * dt
                    sys_area += n_sys * dt
                    ts.append(t)
                    kvc.append(kv_area)
                    if not stalled:
                        last_dec = t
                    last_done = []
                    for r in new:
                        g = gen[r]
                        if g == 0:
                            first[r] = t
                        g += 1
                        gen[r] = g
                        rem = out[r] - g
                        if rem:
                            join[r] = dstep
                            f = dstep + rem
                            fin[r] = f
                            bucket = buckets.get(f)
                            if bucket is None:
                                buckets[f] = [r]
                            else:
                                bucket.append(r)
                        else:  # one-token output: done at its first token
                            done[r] = t
                            del admitted[r]
                            dec_ctx -= inp[r] + g - 1
                            reserved -= inp[r] + out[r]
                            n_adm -= 1
                            n_sys -= 1
                            n_done += 1
                            last_done.append(t)
                            if cl_next < nids:
                                arr[cl_next] = t
                                issue[ids[cl_next]] = t
                                cl_next += 1
                    continue
            if n_adm:  # decode step over every admitted sequence
                while dec_ctx + n_adm > cap:  # preemption by recompute (optimistic admission only)
                    r = next(reversed(admitted))
                    del admitted[r]
                    g = gen[r] + dstep - join[r]
                    gen[r] = g
                    dec_ctx -= inp[r] + g - 1
                    reserved -= inp[r] + out[r]
                    fin[r] = -1
                    ready[r] = False
                    npre[r] += 1
                    n_adm -= 1
                    waiting.appendleft(r)
                key = dec_ctx * stride + n_adm
                dt = dcache.get(key)
                if dt is None:
                    dt = decode_time(n_adm, dec_ctx)
                    if len(dcache) >= _CACHE_LIMIT:
                        dcache.clear()
                    dcache[key] = dt
                t += dt
                steps += 1
                dstep += 1
                itl_gap.append(t - last_dec)
                itl_n.append(n_adm)
                last_dec = t
                dec_ctx += n_adm
                if dec_ctx > kv_peak:
                    kv_peak = dec_ctx
                kv_area += dec_ctx * dt
                run_area += n_adm * dt
                sys_area += n_sys * dt
                ts.append(t)
                kvc.append(kv_area)
                last_done = []
                finishing = buckets.pop(dstep, None)
                if finishing is not None:
                    for r in finishing:
                        if fin[r] != dstep:  # preempted since
                            continue
                        fin[r] = -1
                        done[r] = t
                        del admitted[r]
                        dec_ctx -= inp[r] + out[r] - 1
                        reserved -= inp[r] + out[r]
                        n_adm -= 1
                        n_sys -= 1
                        n_done += 1
                        last_done.append(t)
                        if cl_next < nids:
                            arr[cl_next] = t
                            issue[ids[cl_next]] = t
                            cl_next += 1
                continue
            if waiting:  # nothing fits an empty replica: validated against, cannot happen
                raise AssertionError("request does not fit an empty replica")
            if nxt < nids and arr[nxt] < t_limit:  # idle until the next arrival
                t = max(t, arr[nxt])
                ts.append(t)
                kvc.append(kv_area)
                continue
            break
        self.nxt, self.cl_next, self.t, self.dstep = nxt, cl_next, t, dstep
        self.n_adm, self.n_sys, self.n_done, self.dec_ctx, self.reserved = n_adm, n_sys, n_done, dec_ctx, reserved
        self.kv_area, self.run_area, self.sys_area = kv_area, run_area, sys_area
        self.kv_peak, self.max_conc, self.steps = kv_peak, max_conc, steps
        self.last_done, self.last_dec = last_done, last_dec


class _Chunked(_Engine):
    """``chunked``: every step decodes all running sequences and prefills up to ``chunk`` prompt tokens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefilling: deque[int] = deque()
        self.left: dict[int, int] = {}
        self.pdone: dict[int, int] = {}
        self.pf_alloc = 0
        self.n_dec = 0

    def advance(self, t_limit: float) -> None:
        R = self.reqs
        inp, out, gen, join, fin, first, done = R.inp, R.out, R.gen, R.join, R.fin, R.first, R.done
        issue, npre = R.issue, R.npre
        ids, arr = self.ids, self.arr
        nids = len(ids)
        nxt, cl_next, t, dstep = self.nxt, self.cl_next, self.t, self.dstep
        waiting, admitted, buckets = self.waiting, self.admitted, self.buckets
        n_adm, n_sys, n_done, dec_ctx, reserved = self.n_adm, self.n_sys, self.n_done, self.dec_ctx, self.reserved
        cap, B, reserve, chunk = self.cap, self.max_batch, self.reserve, self.chunk
        model = self.model
        dcache, stride = self.dcache, self.stride
        ts, kvc, itl_gap, itl_n = self.ts, self.kvc, self.itl_gap, self.itl_n
        kv_area, run_area, sys_area = self.kv_area, self.run_area, self.sys_area
        kv_peak, max_conc, steps = self.kv_peak, self.max_conc, self.steps
        last_done = self.last_done
        prefilling = self.prefilling
        left, pdone = self.left, self.pdone
        pf_alloc, n_dec = self.pf_alloc, self.n_dec
        while t < t_limit:
            while nxt < nids and arr[nxt] <= t:
                waiting.append(ids[nxt])
                sys_area += t - arr[nxt]
                nxt += 1
                n_sys += 1
            while dec_ctx + pf_alloc + n_dec > cap:  # preemption by recompute (optimistic admission only)
                r = next(reversed(admitted))
                del admitted[r]
                if fin[r] >= 0:
                    g = gen[r] + dstep - join[r]
                    gen[r] = g
                    dec_ctx -= inp[r] + g - 1
                    fin[r] = -1
                    n_dec -= 1
                else:
                    prefilling.remove(r)
                    pf_alloc -= inp[r] + gen[r]
                    del left[r], pdone[r]
                reserved -= inp[r] + out[r]
                npre[r] += 1
                n_adm -= 1
                waiting.appendleft(r)
            budget = chunk
            pieces: list[tuple[int, int]] = []
            pf_ctx = 0
            for r in prefilling:
                take = min(left[r], budget)
                pieces.append((r, take))
                pf_ctx += pdone[r]
                budget -= take
                if not budget:
                    break
            while budget and waiting and n_adm < B:
                r = waiting[0]
                q = inp[r] + gen[r]
                if reserve:
                    if reserved + inp[r] + out[r] > cap:
                        break
                elif dec_ctx + pf_alloc + q + n_adm + 1 > cap:
                    break
                waiting.popleft()
                admitted[r] = None
                n_adm += 1
                reserved += inp[r] + out[r]
                prefilling.append(r)
                left[r] = q
                pdone[r] = 0
                pf_alloc += q
                take = min(q, budget)
                pieces.append((r, take))
                budget -= take
            if n_adm > max_conc:
                max_conc = n_adm
            pf_tokens = chunk - budget
            if not pf_tokens and not n_dec:
                if waiting:
                    raise AssertionError("request does not fit an empty replica")
                if nxt < nids and arr[nxt] < t_limit:
                    t = max(t, arr[nxt])
                    ts.append(t)
                    kvc.append(kv_area)
                    continue
                break
            if pf_tokens and n_dec:
                dt = model.mixed_time(pf_tokens, pf_ctx, n_dec, dec_ctx)
            elif pf_tokens:
                dt = model.prefill_time(pf_tokens, pf_ctx)
            else:
                key = dec_ctx * stride + n_dec
                cached = dcache.get(key)
                if cached is None:
                    cached = model.decode_time(n_dec, dec_ctx)
                    if len(dcache) >= _CACHE_LIMIT:
                        dcache.clear()
                    dcache[key] = cached
                dt = cached
            t += dt
            steps += 1
            used = dec_ctx + n_dec + pf_alloc
            if used > kv_peak:
                kv_peak = used
            kv_area += used * dt
            run_area += n_adm * dt
            sys_area += n_sys * dt
            ts.append(t)
            kvc.append(kv_area)
            last_done = []
            if n_dec:
                itl_gap.append(dt)
                itl_n.append(n_dec)
                dstep += 1
                dec_ctx += n_dec
                finishing = buckets.pop(dstep, None)
                if finishing is not None:
                    for r in finishing:
                        if fin[r] != dstep:
                            continue
                        fin[r] = -1
                        done[r] = t
                        del admitted[r]
                        dec_ctx -= inp[r] + out[r] - 1
                        reserved -= inp[r] + out[r]
                        n_adm -= 1
                        n_dec -= 1
                        n_sys -= 1
                        n_done += 1
                        last_done.append(t)
                        if cl_next < nids:
                            arr[cl_next] = t
                            issue[ids[cl_next]] = t
                            cl_next += 1
            for r, take in pieces:
                rest = left[r] - take
                if rest:
                    left[r] = rest
                    pdone[r] += take
                    continue
                # prompt complete (completed prompts are a prefix of ``prefilling``)
                prefilling.popleft()
                del left[r], pdone[r]
                g = gen[r]
                q = inp[r] + g
                pf_alloc -= q
                if g == 0:
                    first[r] = t
                g += 1
                gen[r] = g
                rem = out[r] - g
                if rem:
                    dec_ctx += q
                    n_dec += 1
                    join[r] = dstep
                    f = dstep + rem
                    fin[r] = f
                    bucket = buckets.get(f)
                    if bucket is None:
                        buckets[f] = [r]
                    else:
                        bucket.append(r)
                else:
                    done[r] = t
                    del admitted[r]
                    reserved -= inp[r] + out[r]
                    n_adm -= 1
                    n_sys -= 1
                    n_done += 1
                    last_done.append(t)
                    if cl_next < nids:
                        arr[cl_next] = t
                        issue[ids[cl_next]] = t
                        cl_next += 1
        self.nxt, self.cl_next, self.t, self.dstep = nxt, cl_next, t, dstep
        self.n_adm, self.n_sys, self.n_done, self.dec_ctx, self.reserved = n_adm, n_sys, n_done, dec_ctx, reserved
        self.kv_area, self.run_area, self.sys_area = kv_area, run_area, sys_area
        self.kv_peak, self.max_conc, self.steps = kv_peak, max_conc, steps
        self.last_done = last_done
        self.pf_alloc, self.n_dec = pf_alloc, n_dec


class _Static(_Engine):
    """``static``: fixed batches prefilled together and decoded (padded) until the longest ends."""

    def _prefill(self, tokens: int) -> float:
        dt = self.pcache.get(tokens)
        if dt is None:
            dt = self.pcache[tokens] = self.model.prefill_time(tokens, 0)
        return dt

    def _decode(self, batch: int, context: int) -> float:
        key = context * self.stride + batch
        dt = self.dcache.get(key)
        if dt is None:
            if len(self.dcache) >= _CACHE_LIMIT:
                self.dcache.clear()
            dt = self.dcache[key] = self.model.decode_time(batch, context)
        return dt

    def advance(self, t_limit: float) -> None:
        R = self.reqs
        inp, out, first, done, issue = R.inp, R.out, R.first, R.done, R.issue
        ids, arr, waiting = self.ids, self.arr, self.waiting
        B, cap, timeout = self.max_batch, self.cap, self.timeout
        t = self.t
        while t < t_limit:
            nids = len(ids)
            while self.nxt < nids and arr[self.nxt] <= t:
                waiting.append(ids[self.nxt])
                self.sys_area += t - arr[self.nxt]
                self.nxt += 1
                self.n_sys += 1
            coming = arr[self.nxt] if self.nxt < nids else (_INF if self.final else t_limit)
            if not waiting:
                if coming < t_limit:
                    t = max(t, coming)
                    self.ts.append(t)
                    self.kvc.append(self.kv_area)
                    continue
                break
            if len(waiting) < B and coming < _INF:  # wait to fill the batch, up to the timeout
                wake = min(issue[waiting[0]] + timeout, coming)
                if wake > t:
                    if wake >= t_limit:
                        break
                    t = wake
                    self.ts.append(t)
                    self.kvc.append(self.kv_area)
                    continue
            batch: list[int] = []
            prompts, longest = 0, 0  # padded KV: every slot holds its prompt and the longest output
            while waiting and len(batch) < B:
                r = waiting[0]
                if prompts + inp[r] + (len(batch) + 1) * max(longest, out[r]) > cap:
                    break
                waiting.popleft()
                batch.append(r)
                prompts += inp[r]
                longest = max(longest, out[r])
            b = len(batch)
            self.max_conc = max(self.max_conc, b)
            prompt = prompts
            outs = [out[r] for r in batch]
            times = [self._prefill(prompt)] + [self._decode(b, prompt + b * k) for k in range(longest - 1)]
            ends = t + np.cumsum(times)
            held = prompt + b * np.arange(longest, dtype=np.float64)  # KV held during each step (padded)
            area = self.kv_area + np.cumsum(held * np.asarray(times))
            self.ts.extend(ends.tolist())
            self.kvc.extend(area.tolist())
            self.kv_area = float(area[-1])
            self.kv_peak = max(self.kv_peak, int(held[-1]))
            end = float(ends[-1])
            span = end - t
            self.run_area += b * span
            self.sys_area += self.n_sys * span
            self.steps += longest
            if longest > 1:  # decode step k serves the sequences with more than k + 1 tokens
                self.itl_gap.extend(times[1:])
                ranks = np.sort(np.asarray(outs))
                self.itl_n.extend((b - np.searchsorted(ranks, np.arange(2, longest + 1), side="left")).tolist())
            t1 = float(ends[0])
            finish = ends[np.asarray(outs) - 1].tolist()
            order = sorted(range(b), key=finish.__getitem__)
            self.last_done = []
            for i in order:
                r = batch[i]
                first[r] = t1
                done[r] = finish[i]
                self.sys_area -= end - finish[i]  # left the system before the batch ended
                self.n_sys -= 1
                self.n_done += 1
                self.last_done.append(finish[i])
                if self.cl_next < nids:
                    arr[self.cl_next] = finish[i]
                    issue[ids[self.cl_next]] = finish[i]
                    self.cl_next += 1
            t = end
        self.t = t


_ENGINES: dict[str, type[_Engine]] = {"static": _Static, "continuous": _Continuous, "chunked": _Chunked}


# ---------------------------------------------------------------------------------------------- entry point


def _positive_int(field_name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise SpecError(field_name, value, "must be a whole number >= 1")
    return int(value)


def _check_model(field_name: str, model: StepModel) -> tuple[int, int]:
    try:
        cap, batch = model.kv_capacity_tokens, model.max_batch
    except AttributeError as error:
        raise SpecError(field_name, type(model).__name__, f"not a StepModel ({error})") from None
    if not (isinstance(cap, int | np.integer | float) and math.isfinite(cap) and cap >= 1):
        raise SpecError(f"{field_name}.kv_capacity_tokens", cap, "KV cache must hold at least one token")
    if not (isinstance(batch, int | np.integer | float) and math.isfinite(batch) and batch >= 1):
        raise SpecError(f"{field_name}.max_batch", batch, "must be >= 1")
    return int(cap), int(batch)


def _check_fit(field_name: str, cap: int, need: IntArray, what: str) -> None:
    worst = int(np.argmax(need))
    if int(need[worst]) > cap:
        raise SpecError(field_name, cap, f"KV cache cannot hold one sequence: request {worst} needs "
                        f"{int(need[worst])} tokens ({what})")


def simulate(
    model: StepModel,
    workload: Workload,
    scheduler: str = "continuous",
    *,
    replicas: int = 1,
    router: str = "round_robin",
    admission: str = "reserve",
    max_batch: int | None = None,
    max_prefill_tokens: int | None = 8192,
    chunk_tokens: int = 2048,
    batch_timeout_s: float = 0.0,
    prefill_model: StepModel | None = None,
    prefill_replicas: int = 1,
    decode_replicas: int = 1,
    slo_ttft_s: float | None = None,
    slo_tpot_s: float | None = None,
    kv_series_points: int = 200,
) -> ServingResult:
    """Simulate ``workload`` on replicas whose steps ``model`` times; see the module docstring.

    ``max_batch`` lowers the model's engine limit (static: the batch size); ``max_prefill_tokens``
    caps the prompt tokens of one prefill step (continuous, disaggregated; ``None``: no cap; a
    longer prompt still goes alone; 8192 as vLLM's and TensorRT-LLM's default token budgets);
    ``chunk_tokens`` is the chunked scheduler's prefill budget per step; ``batch_timeout_s`` the
    static scheduler's longest wait to fill a batch (a static batch is prefilled whole).
    ``slo_ttft_s`` / ``slo_tpot_s`` set the goodput SLO of ``summary`` (recompute with
    :meth:`ServingResult.summarise`). Refusals (:class:`SpecError`): unknown scheduler, router or
    admission; counts below 1; a request whose ``p + o`` exceeds the KV cache.
    """
    if scheduler not in SCHEDULERS:
        raise SpecError("scheduler", scheduler, f"must be one of {', '.join(SCHEDULERS)}")
    if router not in ROUTERS:
        raise SpecError("router", router, f"must be one of {', '.join(ROUTERS)}")
    if admission not in ADMISSIONS:
        raise SpecError("admission", admission, f"must be one of {', '.join(ADMISSIONS)}")
    if not isinstance(workload, Workload):
        raise SpecError("workload", type(workload).__name__, "must be a Workload")
    replicas = _positive_int("replicas", replicas)
    chunk_tokens = _positive_int("chunk_tokens", chunk_tokens)
    kv_series_points = _positive_int("kv_series_points", kv_series_points)
    budget = _INF if max_prefill_tokens is None else _positive_int("max_prefill_tokens", max_prefill_tokens)
    if not (isinstance(batch_timeout_s, int | float) and batch_timeout_s >= 0 and not math.isnan(batch_timeout_s)):
        raise SpecError("batch_timeout_s", batch_timeout_s, "must be a number of seconds >= 0")
    for name, slo in (("slo_ttft_s", slo_ttft_s), ("slo_tpot_s", slo_tpot_s)):
        if slo is not None and not (isinstance(slo, int | float) and slo > 0):
            raise SpecError(name, slo, "must be a number of seconds > 0")
    cap, engine_batch = _check_model("model", model)
    if max_batch is not None:
        engine_batch = min(engine_batch, _positive_int("max_batch", max_batch))
    need = workload.input_tokens + workload.output_tokens
    reqs = _Requests(workload)
    cfg = _Config(cap=cap, max_batch=engine_batch, reserve=admission == "reserve", prefill_budget=budget,
                  chunk_tokens=chunk_tokens, batch_timeout_s=float(batch_timeout_s))
    extra: dict[str, float] = {}
    if scheduler == "disaggregated":
        if replicas != 1:
            raise SpecError("replicas", replicas, "with the disaggregated scheduler, size the pools with "
                            "prefill_replicas and decode_replicas")
        if workload.closed_loop:
            raise SpecError("workload", "closed loop", "the disaggregated scheduler takes open-loop workloads")
        prefill_replicas = _positive_int("prefill_replicas", prefill_replicas)
        decode_replicas = _positive_int("decode_replicas", decode_replicas)
        pmodel = model if prefill_model is None else prefill_model
        pcap, pbatch = _check_model("prefill_model", pmodel)
        _check_fit("prefill_model.kv_capacity_tokens", pcap, workload.input_tokens, "its prompt")
        _check_fit("model.kv_capacity_tokens", cap, need, "prompt + output")
        if max_batch is not None:
            pbatch = min(pbatch, max_batch)
        engines, busy = _disaggregated(reqs, model, pmodel, cfg, pcap, pbatch, budget, prefill_replicas,
                                       decode_replicas, router)
        extra["prefill_busy_fraction"] = busy
        n_replicas = decode_replicas
    else:
        _check_fit("model.kv_capacity_tokens", cap, need, "prompt + output")
        engines = _run_fleet(reqs, workload, model, cfg, scheduler, replicas, router)
        n_replicas = replicas
    return _result(scheduler, n_replicas, workload, reqs, engines, kv_series_points, slo_ttft_s, slo_tpot_s, extra)


def _route_least_loaded(engines: list[_Engine], order: list[int], arrival: list[float]) -> None:
    """Push each request (in arrival order) to the engine with the fewest unfinished requests then."""
    for r in order:
        a = arrival[r]
        best, best_load = engines[0], -1
        for engine in engines:
            engine.advance(a)
            load = engine.load(a)
            if best_load < 0 or load < best_load:
                best, best_load = engine, load
        best.push(r, a)
    for engine in engines:
        engine.final = True


def _run_fleet(reqs: _Requests, workload: Workload, model: StepModel, cfg: _Config, scheduler: str,
               replicas: int, router: str) -> list[_Engine]:
    kind = _ENGINES[scheduler]
    n = reqs.n
    arrival = reqs.issue
    engines: list[_Engine]
    if workload.concurrency is not None:  # clients dealt evenly; a replica's requests go to its clients
        clients = workload.concurrency
        active = min(replicas, clients)
        engines = []
        for k in range(replicas):
            ids = list(range(k, n, active)) if k < active else []
            share = clients // active + (1 if k < clients % active else 0)
            engines.append(kind(k, model, reqs, cfg, ids, [0.0] * len(ids), share, True))
    elif router == "round_robin" or replicas == 1:
        engines = [kind(k, model, reqs, cfg, list(range(k, n, replicas)), arrival[k::replicas], None, True)
                   for k in range(replicas)]
    else:
        engines = [kind(k, model, reqs, cfg, [], [], None, False) for k in range(replicas)]
        _route_least_loaded(engines, list(range(n)), arrival)
    for engine in engines:
        engine.advance(_INF)
    return engines


def _disaggregated(reqs: _Requests, model: StepModel, pmodel: StepModel, cfg: _Config, pcap: int, pbatch: int,
                   budget: float, n_prefill: int, n_decode: int, router: str) -> tuple[list[_Engine], float]:
    """Prefill pool (one FCFS queue, ``n_prefill`` servers, batches of at most ``pbatch`` prompts and
    ``budget`` or ``pcap`` tokens), KV transfers, then ``n_decode`` continuous decode replicas.
    Returns the decode engines and the prefill pool's busy fraction."""
    n = reqs.n
    inp, out, arrival = reqs.inp, reqs.out, reqs.issue
    token_limit = min(budget, float(pcap))
    free = [0.0] * n_prefill  # heap of the times the prefill replicas become free
    busy = 0.0
    ready_at = [0.0] * n
    transfer: dict[int, float] = {}
    prefill: dict[int, float] = {}
    i = 0
    while i < n:
        t = max(heapq.heappop(free), arrival[i])
        j, tokens = i, 0
        while j < n and arrival[j] <= t and j - i < pbatch and (j == i or tokens + inp[j] <= token_limit):
            tokens += inp[j]
            j += 1
        dt = prefill.get(tokens)
        if dt is None:
            dt = prefill[tokens] = pmodel.prefill_time(tokens, 0)
        end = t + dt
        busy += dt
        heapq.heappush(free, end)
        for r in range(i, j):
            p = inp[r]
            move = transfer.get(p)
            if move is None:
                move = transfer[p] = pmodel.kv_transfer_time(p)
            ready_at[r] = end + move
            reqs.first[r] = end + move
            reqs.gen[r] = 1
            reqs.ready[r] = True
            if out[r] == 1:
                reqs.done[r] = end + move
                reqs.replica[r] = -1
        i = j
    decode_ids = sorted((r for r in range(n) if out[r] > 1), key=ready_at.__getitem__)
    engines: list[_Engine]
    if router == "round_robin" or n_decode == 1:
        engines = []
        for k in range(n_decode):
            ids = decode_ids[k::n_decode]
            engines.append(_Continuous(k, model, reqs, cfg, ids, [ready_at[r] for r in ids], None, True))
    else:
        engines = [_Continuous(k, model, reqs, cfg, [], [], None, False) for k in range(n_decode)]
        _route_least_loaded(engines, decode_ids, ready_at)
    for engine in engines:
        engine.advance(_INF)
    span = max(max(reqs.done), max(reqs.first)) - min(arrival)
    return engines, busy / (n_prefill * span) if span > 0 else math.nan


def _weighted_percentiles(gaps: FloatArray, weights: FloatArray) -> dict[str, float]:
    """Inter-token latency over all tokens after the first: mean, p50/p90/p99 and max (NaN if none)."""
    keep = weights > 0
    gaps, weights = gaps[keep], weights[keep]
    if not gaps.size:
        return {"itl_s_mean": math.nan, **{f"itl_s_{key}": math.nan for key in PERCENTILES}, "itl_s_max": math.nan}
    order = np.argsort(gaps, kind="stable")
    gaps, cum = gaps[order], np.cumsum(weights[order])
    out = {"itl_s_mean": float(np.dot(gaps, weights[order]) / cum[-1])}
    for key, q in PERCENTILES.items():
        out[f"itl_s_{key}"] = float(gaps[min(int(np.searchsorted(cum, q / 100 * cum[-1])), gaps.size - 1)])
    out["itl_s_max"] = float(gaps[-1])
    return out


def _result(scheduler: str, replicas: int, workload: Workload, reqs: _Requests, engines: list[_Engine],
            points: int, slo_ttft_s: float | None, slo_tpot_s: float | None,
            extra: dict[str, float]) -> ServingResult:
    arrival = np.array(reqs.issue)
    first = np.array(reqs.first)
    done = np.array(reqs.done)
    inputs = workload.input_tokens
    outputs = workload.output_tokens
    if not (np.all(np.isfinite(done)) and np.all(first >= arrival) and np.all(done >= first)):
        raise SpecError("model", type(engines[0].model).__name__ if engines else "model",
                        "step times must be finite and >= 0")
    ttft = first - arrival
    e2e = done - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(outputs > 1, (done - first) / np.maximum(outputs - 1, 1), np.nan)
    t0, t1 = float(arrival.min()), float(done.max())
    duration = t1 - t0
    m = max(len(engines), 1)
    if duration > 0 and engines:
        edges = np.linspace(t0, t1, points + 1)
        util = np.zeros(points)
        for engine in engines:
            integral = np.interp(edges, np.asarray(engine.ts), np.asarray(engine.kvc))
            util += np.diff(integral) / np.diff(edges) / engine.cap
        util /= m
        kv_mean = sum(e.kv_area / e.cap for e in engines) / (m * duration)
        run_mean = sum(e.run_area for e in engines) / (m * duration)
        sys_mean = sum(e.sys_area for e in engines) / duration
    else:
        edges, util = np.array([t0, t1]), np.zeros(1)
        kv_mean = run_mean = sys_mean = math.nan
    if scheduler == "disaggregated":  # requests also wait in the prefill pool: count them by Little's law
        sys_mean = float(e2e.sum()) / duration if duration > 0 else math.nan
    gaps = np.concatenate([np.asarray(e.itl_gap, dtype=np.float64) for e in engines]) if engines else np.zeros(0)
    weights = np.concatenate([np.asarray(e.itl_n, dtype=np.float64) for e in engines]) if engines else np.zeros(0)
    itl = _weighted_percentiles(gaps, weights)
    stats = {
        "max_concurrent_sequences": float(max((e.max_conc for e in engines), default=0)),
        "mean_running_sequences": run_mean,
        "mean_in_system": sys_mean,
        "kv_utilisation_mean": kv_mean,
        "kv_utilisation_max": max((e.kv_peak / e.cap for e in engines), default=0.0),
        "preemptions": float(sum(reqs.npre)),
        "steps": float(sum(e.steps for e in engines)),
        **itl,
        **extra,
    }
    result = ServingResult(
        scheduler=scheduler, replicas=replicas, arrival_s=arrival, input_tokens=inputs, output_tokens=outputs,
        first_token_s=first, completion_s=done, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e,
        preemptions=np.array(reqs.npre, dtype=np.int64), replica=np.array(reqs.replica, dtype=np.int64),
        kv_time_s=edges[:-1], kv_utilisation=util, stats=stats)
    for array in (result.arrival_s, result.first_token_s, result.completion_s, result.ttft_s, result.tpot_s,
                  result.e2e_s, result.preemptions, result.replica, result.kv_time_s, result.kv_utilisation):
        array.setflags(write=False)
    object.__setattr__(result, "summary", result.summarise(slo_ttft_s, slo_tpot_s))
    return result
