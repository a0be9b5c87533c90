"""Engine loops of the serving simulator: one class per scheduler, fleets and disaggregation.

:func:`clusterplan.inference.serving.simulate` is the entry point and its module docstring states
the rules; this module holds the loops. An engine is one replica: requests pushed to it (global
ids, arrival times in order), per-request state shared with the other engines of a fleet, and
:meth:`_Engine.advance`, which runs every step that starts before a time limit. Per-request work
happens only when a request arrives, is admitted, finishes a prefill, finishes or is preempted;
finish times are kept in buckets keyed by the step count at which a sequence ends, so a step costs
O(1) Python work plus its events, whatever the batch. Stretches of decode-only steps between two
events run in a tight loop over the exact decode line of :mod:`~clusterplan.inference.steptimes`.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clusterplan.inference.steptimes import StepTimes
from clusterplan.inference.workload import Workload

_INF = math.inf


class Requests:
    """Per-request state shared by the engines, as Python lists (fast scalar access in the loops)."""

    def __init__(self, workload: Workload, cached: list[int] | None = None,
                 kv: list[int] | None = None) -> None:
        n = len(workload)
        self.n = n
        self.inp: list[int] = workload.input_tokens.tolist()
        self.out: list[int] = workload.output_tokens.tolist()
        self.need: list[int] = (workload.input_tokens + workload.output_tokens).tolist()
        # KV reserved per sequence at its full length, in token-equivalents: ``need`` itself, or
        # fewer for a sliding-window model (``kv_tokens`` of the step model; serving module doc)
        self.kv: list[int] = kv if kv is not None else self.need
        self.issue: list[float] = workload.arrival_s.tolist()
        self.gen = [0] * n  # tokens generated when it last joined decode (or was preempted)
        self.join = [0] * n  # engine step count when it joined decode
        self.fin = [-1] * n  # step count at whose end it finishes (-1: not decoding)
        self.left = [0] * n  # prompt tokens still to prefill (chunked)
        self.pdone = [0] * n  # prompt tokens prefilled so far (chunked)
        self.first = [math.nan] * n
        self.done = [math.nan] * n
        self.npre = [0] * n
        self.ready = [False] * n  # KV present on arrival (disaggregated decode replicas)
        self.replica = [0] * n
        # prompt tokens found in the prefix cache: prefilled as context, not computed
        self.cached: list[int] = cached if cached is not None else [0] * n


@dataclass
class Config:
    cap: int
    max_batch: int
    reserve: bool
    prefill_budget: float
    chunk_tokens: int
    batch_timeout_s: float
    #: sliding-window models: KV token-equivalents held by a sequence of a given length
    #: (``None``: the length itself); utilisation then counts ``n * kv_tokens(total / n)``
    kv_tokens: Callable[[float], float] | None = None


class _Engine:
    """One replica: its queue of requests and its counters."""

    def __init__(self, index: int, times: StepTimes, reqs: Requests, cfg: Config, ids: list[int],
                 arrivals: list[float], concurrency: int | None, final: bool) -> None:
        self.index = index
        self.times = times
        self.reqs = reqs
        self.cap = cfg.cap
        self.max_batch = cfg.max_batch
        self.reserve = cfg.reserve
        self.pf_budget = cfg.prefill_budget
        self.chunk = cfg.chunk_tokens
        self.timeout = cfg.batch_timeout_s
        self.kv_tokens = cfg.kv_tokens
        self.ids = ids
        self.arr = arrivals
        self.final = final  # no more pushes will come
        self.cl_next = len(ids)  # closed loop: requests issued so far
        if concurrency is not None:
            self.cl_next = min(concurrency, len(ids))
            for i in range(len(ids)):
                self.arr[i] = 0.0 if i < self.cl_next else _INF
                reqs.issue[ids[i]] = self.arr[i]
        for r in ids:
            reqs.replica[r] = index
        self.nxt = 0  # next of ids to arrive
        self.t = 0.0
        self.it = 0  # decode steps run (each gives every decoding sequence one token)
        self.steps = 0  # engine steps run (decode, prefill or mixed)
        self.requeue: deque[int] = deque()  # preempted, back at the head of the queue
        self.waiting: deque[int] = deque()  # arrived, not admitted (continuous, static)
        self.admitted: dict[int, None] = {}  # in admission order (newest is preempted first)
        self.prefill_queue: deque[int] = deque()
        self.buckets: dict[int, list[int]] = {}
        self.heap: list[int] = []
        self.n_adm = 0
        self.n_dec = 0
        self.n_done = 0
        self.dec_ctx = 0  # sum over decoding sequences of prompt + tokens produced
        self.pf_alloc = 0  # KV of admitted prompts not yet prefilled
        self.reserved = 0
        self.last_done: list[float] = []  # completion times of the last step/batch (for load)
        self.ts: list[float] = [0.0]  # step boundaries and the KV-token-seconds integral there
        self.kvc: list[float] = [0.0]
        self.kv_area = 0.0
        self.kv_peak: float = 0
        self.max_conc = 0
        self.busy = 0.0
        self.batch_sum = 0

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

    def _schedule_finish(self, r: int, f: int) -> None:
        self.reqs.fin[r] = f
        bucket = self.buckets.get(f)
        if bucket is None:
            self.buckets[f] = [r]
            heapq.heappush(self.heap, f)
        else:
            bucket.append(r)

    def _prompt_done(self, r: int, t: float) -> None:
        """Request ``r``'s (re-)prefill ended at ``t``: it emits a token (its first, unless it is
        recomputing after a preemption), then decodes or, with nothing left to generate, ends."""
        R = self.reqs
        g = R.gen[r]
        if g == 0:
            R.first[r] = t
        g += 1
        R.gen[r] = g
        rem = R.out[r] - g
        if rem:
            self.dec_ctx += R.inp[r] + g
            self.n_dec += 1
            R.join[r] = self.it
            self._schedule_finish(r, self.it + rem)
        else:
            self._finish(r, t)

    def _finish(self, r: int, t: float) -> None:
        R = self.reqs
        R.done[r] = t
        R.fin[r] = -1
        del self.admitted[r]
        self.reserved -= R.kv[r]
        self.n_adm -= 1
        self.n_done += 1
        self.last_done.append(t)
        if self.cl_next < len(self.ids):  # closed loop: the client sends its next request now
            self.arr[self.cl_next] = t
            R.issue[self.ids[self.cl_next]] = t
            self.cl_next += 1

    def _preempt_newest(self) -> None:
        """Evict the newest admitted sequence (recompute preemption): its KV is dropped and it goes
        back to the head of the queue with the tokens it has generated."""
        R = self.reqs
        r = next(reversed(self.admitted))
        del self.admitted[r]
        if R.fin[r] >= 0:  # decoding
            g = R.gen[r] + self.it - R.join[r]
            R.gen[r] = g
            self.dec_ctx -= R.inp[r] + g
            R.fin[r] = -1
            self.n_dec -= 1
        else:  # admitted, prompt not (fully) prefilled
            if r in self.prefill_queue:
                self.prefill_queue.remove(r)
            self.pf_alloc -= R.inp[r] + R.gen[r]
        R.ready[r] = False
        self.reserved -= R.kv[r]
        R.npre[r] += 1
        self.n_adm -= 1
        self.requeue.appendleft(r)

    def _record(self, t: float) -> None:
        self.ts.append(t)
        self.kvc.append(self.kv_area)

    def _held(self, total: float, n: int) -> Any:
        """KV token-equivalents held by ``n`` sequences of ``total`` tokens together, sliding-window
        model: ``n * kv_tokens(total / n)``, an upper bound on the sum over the sequences since
        ``kv_tokens`` is concave (Jensen); the mean-context form of ``ReplicaModel._decode_keys``."""
        assert self.kv_tokens is not None
        return n * self.kv_tokens(total / n) if n else total

    def _step_done(self, t: float, dt: float, used: int, batch: int, decodes: bool = True) -> None:
        self.busy += dt
        self.steps += 1
        if decodes:
            self.it += 1
        self.batch_sum += batch
        if self.kv_tokens is not None:
            used = self._held(used, self.n_adm)
        self.kv_area += used * dt
        if used > self.kv_peak:
            self.kv_peak = used
        self.ts.append(t)
        self.kvc.append(self.kv_area)

    def _decode_stretch(self, target: int, limit: float) -> bool:
        """Decode-only steps while the next one neither finishes a sequence (step ``target``) nor
        starts at or after ``limit`` (an arrival that could be admitted, or the caller's limit).
        Returns whether any step ran."""
        b = self.n_dec
        if not self.reserve:  # optimistic: stop before the step whose context overflows the KV
            target = min(target, self.it + 2 + (self.cap - self.dec_ctx - self.pf_alloc) // b)
        it, t, ctx, area = self.it, self.t, self.dec_ctx, self.kv_area
        start_it, start_t = it, t
        line = self.times.decode_line(b)
        if line is not None:
            base, slope = line
            while it + 1 < target and t < limit:
                dt = base + slope * ctx
                t += dt
                area += ctx * dt
                it += 1
                ctx += b
        elif self.kv_tokens is not None:  # sliding windows: KV held below the context
            decode, held = self.times.decode, self.kv_tokens
            while it + 1 < target and t < limit:
                dt = decode(b, ctx)
                t += dt
                area += b * held(ctx / b) * dt
                it += 1
                ctx += b
        else:
            decode = self.times.decode
            while it + 1 < target and t < limit:
                dt = decode(b, ctx)
                t += dt
                area += ctx * dt
                it += 1
                ctx += b
        if it == start_it:
            return False
        self.busy += t - start_t
        self.steps += it - start_it
        self.batch_sum += b * (it - start_it)
        peak = ctx - b if self.kv_tokens is None else self._held(ctx - b, b)
        if peak > self.kv_peak:
            self.kv_peak = peak
        self.it, self.t, self.dec_ctx, self.kv_area = it, t, ctx, area
        self._record(t)
        return True

    def _finish_bucket(self, t: float) -> None:
        """Finish the sequences whose last token came out of step ``self.it``."""
        it = self.it
        if self.heap and self.heap[0] <= it:
            heapq.heappop(self.heap)
            R = self.reqs
            fin, need = R.fin, R.need
            for r in self.buckets.pop(it, ()):
                if fin[r] != it:  # preempted since
                    continue
                self.n_dec -= 1
                self.dec_ctx -= need[r]
                self._finish(r, t)


class Chunked(_Engine):
    """``chunked``: every step decodes all running sequences and prefills admitted sequences,
    first come first served, with the rest of a per-step budget of ``chunk`` tokens in which
    each decoding sequence counts one (Sarathi-Serve's token budget; vLLM V1's
    ``max_num_batched_tokens``; TensorRT-LLM's ``max_num_tokens``)."""

    def _admit(self, r: int) -> None:
        R = self.reqs
        q = R.inp[r] + R.gen[r]
        self.admitted[r] = None
        self.n_adm += 1
        self.reserved += R.kv[r]
        self.pf_alloc += q
        h = R.cached[r]
        R.left[r] = q - h
        R.pdone[r] = h
        self.prefill_queue.append(r)

    def advance(self, t_limit: float) -> None:
        R = self.reqs
        inp, kv, gen, left, pdone = R.inp, R.kv, R.gen, R.left, R.pdone
        ids, arr = self.ids, self.arr
        cap, B, reserve, chunk = self.cap, self.max_batch, self.reserve, self.chunk
        times = self.times
        pq, requeue = self.prefill_queue, self.requeue
        while True:
            t = self.t
            # ---- admission: preempted requests first, then arrivals in order
            while requeue and self.n_adm < B:
                r = requeue[0]
                if self.dec_ctx + self.pf_alloc + inp[r] + gen[r] + len(pq) + 1 > cap:
                    break
                requeue.popleft()
                self._admit(r)
            if not requeue:
                while self.nxt < self.cl_next and arr[self.nxt] <= t and self.n_adm < B:
                    r = ids[self.nxt]
                    if reserve:
                        if self.reserved + kv[r] > cap:
                            break
                    elif self.dec_ctx + self.pf_alloc + inp[r] + len(pq) + 1 > cap:
                        break
                    self._admit(r)
                    self.nxt += 1
            if self.n_adm > self.max_conc:
                self.max_conc = self.n_adm
            if self.n_adm == 0:
                if self.nxt < self.cl_next and arr[self.nxt] < t_limit:  # idle until the next arrival
                    if arr[self.nxt] > t:
                        self.t = arr[self.nxt]
                        self._record(self.t)
                    continue
                return
            if t >= t_limit:
                return
            if not reserve:  # preemption by recompute before a step would overflow the KV
                while self.dec_ctx + self.pf_alloc > cap:
                    self._preempt_newest()
            if not pq or self.n_dec >= chunk:
                # Decode-only stretch (nothing to prefill, or the decodes take the whole budget):
                # nothing but the context changes until the next finish or the next arrival
                # that could be admitted.
                limit = t_limit
                if self.nxt < self.cl_next and not requeue and self.n_adm < B:
                    r = ids[self.nxt]
                    if (self.reserved + kv[r] <= cap if reserve
                            else self.dec_ctx + self.pf_alloc + inp[r] + 1 <= cap):
                        limit = min(limit, arr[self.nxt])
                if self._decode_stretch(self.heap[0], limit):
                    continue
            # ---- one step: decode every running sequence, prefill with the rest of the budget
            room = chunk - self.n_dec if chunk > self.n_dec else 0
            budget = room
            pf_ctx = 0
            pairs = 0.0
            pieces = 0
            for r in pq if room else ():
                take = left[r] if left[r] < budget else budget
                pf_ctx += pdone[r]
                pairs += take * (pdone[r] + take * 0.5)  # causal, over its own sequence only
                budget -= take
                pieces += 1
                if budget == 0:
                    break
            pf_tokens = room - budget
            n_dec, dec_ctx = self.n_dec, self.dec_ctx
            if pf_tokens:
                dt = times.pieces(pf_tokens, pairs, pieces, pf_ctx, n_dec, dec_ctx)
            else:
                dt = times.decode(n_dec, dec_ctx)
            t += dt
            self.t = t
            self._step_done(t, dt, dec_ctx + self.pf_alloc, n_dec + pieces)
            self.dec_ctx += n_dec
            self._finish_bucket(t)
            budget = room
            for _ in range(pieces):
                r = pq[0]
                take = left[r] if left[r] < budget else budget
                budget -= take
                if take < left[r]:
                    left[r] -= take
                    pdone[r] += take
                    break
                pq.popleft()
                self.pf_alloc -= inp[r] + gen[r]
                self._prompt_done(r, t)


class Continuous(_Engine):
    """``continuous``: iteration-level batching with prefill priority (vLLM V0's default): a step
    that admits requests prefills all their prompts (decodes wait), else every running sequence
    decodes. Requests marked ``ready`` (disaggregated decode replicas) join decode at once."""

    def advance(self, t_limit: float) -> None:
        R = self.reqs
        inp, out, kv, gen, ready = R.inp, R.out, R.kv, R.gen, R.ready
        ids, arr, waiting, requeue = self.ids, self.arr, self.waiting, self.requeue
        cap, B, reserve, budget = self.cap, self.max_batch, self.reserve, self.pf_budget
        times = self.times
        while True:
            t = self.t
            while self.nxt < self.cl_next and arr[self.nxt] <= t:
                waiting.append(ids[self.nxt])
                self.nxt += 1
            while requeue:
                waiting.appendleft(requeue.pop())
            if waiting and self.n_adm < B and t < t_limit:
                new: list[int] = []
                tokens = 0  # KV of the new prompts
                fresh = 0  # their tokens computed (not in the prefix cache)
                cached = 0
                pairs = 0.0
                while waiting and self.n_adm < B:
                    r = waiting[0]
                    g = gen[r]
                    q = inp[r] + g
                    if reserve:
                        if self.reserved + kv[r] > cap:
                            break
                    elif self.dec_ctx + tokens + q + len(new) + 1 > cap:
                        break
                    if ready[r]:  # KV transferred in: joins decode now with its first token
                        waiting.popleft()
                        self.dec_ctx += q
                        self.n_dec += 1
                        R.join[r] = self.it
                        self._schedule_finish(r, self.it + out[r] - g)
                    else:
                        h = R.cached[r]
                        if new and fresh + q - h > budget:
                            break
                        waiting.popleft()
                        new.append(r)
                        tokens += q
                        fresh += q - h
                        cached += h
                        pairs += (q - h) * (h + (q - h) * 0.5)  # causal, each prompt over itself
                    self.reserved += kv[r]
                    self.admitted[r] = None
                    self.n_adm += 1
                if self.n_adm > self.max_conc:
                    self.max_conc = self.n_adm
                if new:  # a prefill step over every admitted prompt
                    dt = times.pieces(fresh, pairs, len(new), cached)
                    t += dt
                    self.t = t
                    self._step_done(t, dt, self.dec_ctx + tokens, len(new), decodes=False)
                    self.last_done = []
                    for r in new:
                        self._prompt_done(r, t)
                    continue
            if self.n_dec and t < t_limit:
                if not reserve:
                    while self.dec_ctx > cap:
                        self._preempt_newest()
                limit = t_limit
                if self.nxt < self.cl_next and self.n_adm < B and not requeue:
                    limit = min(limit, arr[self.nxt])
                if not waiting and self._decode_stretch(self.heap[0], limit):
                    continue
                n_dec, dec_ctx = self.n_dec, self.dec_ctx
                dt = times.decode(n_dec, dec_ctx)
                t += dt
                self.t = t
                self._step_done(t, dt, dec_ctx, n_dec)
                self.dec_ctx += n_dec
                self.last_done = []
                self._finish_bucket(t)
                continue
            if t >= t_limit:
                return
            if waiting:  # nothing fits an empty replica: validated against, cannot happen
                raise AssertionError("request does not fit an empty replica")
            if self.nxt < self.cl_next and arr[self.nxt] < t_limit:  # idle until the next arrival
                self.t = max(t, arr[self.nxt])
                self._record(self.t)
                continue
            return


class Static(_Engine):
    """``static``: fixed batches prefilled together and decoded (padded) until the longest ends."""

    def advance(self, t_limit: float) -> None:
        R = self.reqs
        inp, out, first, done, issue = R.inp, R.out, R.first, R.done, R.issue
        ids, arr, waiting = self.ids, self.arr, self.waiting
        B, cap, timeout = self.max_batch, self.cap, self.timeout
        times = self.times
        t = self.t
        while t < t_limit:
            nids = len(ids)
            while self.nxt < self.cl_next and arr[self.nxt] <= t:
                waiting.append(ids[self.nxt])
                self.nxt += 1
            coming = arr[self.nxt] if self.nxt < self.cl_next else (_INF if self.final else t_limit)
            if not waiting:
                if coming < t_limit:
                    t = max(t, coming)
                    self.t = t
                    self._record(t)
                    continue
                break
            if len(waiting) < B and coming < _INF:  # wait to fill the batch, up to the timeout
                wake = min(issue[waiting[0]] + timeout, coming)
                if wake > t:
                    if wake >= t_limit:
                        break
                    t = wake
                    self._record(t)
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
            outs = [out[r] for r in batch]
            # decode step k (0-based) serves slots that have produced k + 1 tokens each
            # causal pairs, each prompt's uncached tokens over its own sequence (prefix cache: context)
            hit = [R.cached[r] for r in batch]
            cached = sum(hit)
            squares = sum((inp[r] - h) * (h + (inp[r] - h) * 0.5) for r, h in zip(batch, hit, strict=True))
            times_s = [times.pieces(prompts - cached, squares, b, cached)] + [times.decode(b, prompts + b * (k + 1))
                                                     for k in range(longest - 1)]
            ends = t + np.cumsum(times_s)
            held = prompts + b * np.arange(longest, dtype=np.float64)  # KV during each step (padded)
            area = self.kv_area + np.cumsum(held * np.asarray(times_s))
            self.ts.extend(ends.tolist())
            self.kvc.extend(area.tolist())
            self.kv_area = float(area[-1])
            self.kv_peak = max(self.kv_peak, int(held[-1]))
            end = float(ends[-1])
            self.busy += end - t
            self.steps += longest
            self.batch_sum += b * longest
            t1 = float(ends[0])
            finish = ends[np.asarray(outs) - 1].tolist()
            self.last_done = []
            for i in sorted(range(b), key=finish.__getitem__):
                r = batch[i]
                first[r] = t1
                done[r] = finish[i]
                self.n_done += 1
                self.last_done.append(finish[i])
                if self.cl_next < nids:
                    arr[self.cl_next] = finish[i]
                    issue[ids[self.cl_next]] = finish[i]
                    self.cl_next += 1
            t = end
            self.t = t
        self.t = t


ENGINES: dict[str, type[_Engine]] = {"static": Static, "continuous": Continuous, "chunked": Chunked}


def _route_least_loaded(engines: list[_Engine], order: list[int], arrival: list[float]) -> None:
    """Push each request (in arrival order) to the engine with the fewest unfinished requests then
    (ties to the lowest index), advancing every engine to the arrival first."""
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


def run_fleet(reqs: Requests, workload: Workload, times: StepTimes, cfg: Config, scheduler: str,
              replicas: int, router: str) -> list[_Engine]:
    """Serve the workload on ``replicas`` engines behind ``router``; a closed loop's clients are
    dealt evenly, each replica running its own closed loop over its share of the requests."""
    kind = ENGINES[scheduler]
    n = reqs.n
    arrival = reqs.issue
    engines: list[_Engine]
    if workload.concurrency is not None:
        clients = workload.concurrency
        active = min(replicas, clients)
        engines = []
        for k in range(replicas):
            ids = list(range(k, n, active)) if k < active else []
            share = clients // active + (1 if k < clients % active else 0)
            engines.append(kind(k, times, reqs, cfg, ids, [0.0] * len(ids), share, True))
    elif router == "round_robin" or replicas == 1:
        engines = [kind(k, times, reqs, cfg, list(range(k, n, replicas)), arrival[k::replicas], None, True)
                   for k in range(replicas)]
    else:
        engines = [kind(k, times, reqs, cfg, [], [], None, False) for k in range(replicas)]
        _route_least_loaded(engines, list(range(n)), arrival)
    for engine in engines:
        engine.advance(_INF)
    return engines


def run_disaggregated(reqs: Requests, times: StepTimes, prefill_times: StepTimes, cfg: Config, pcap: int,
                      pbatch: int, n_prefill: int, n_decode: int, router: str) -> tuple[list[_Engine], float, int]:
    """Prefill pool (one FCFS queue, ``n_prefill`` servers, batches of at most ``pbatch`` prompts and
    the prefill budget or ``pcap`` tokens), KV transfers, then ``n_decode`` continuous decode
    replicas. Returns the decode engines, the prefill pool's busy fraction and its step count."""
    n = reqs.n
    inp, out, arrival = reqs.inp, reqs.out, reqs.issue
    model = prefill_times.model
    token_limit = min(cfg.prefill_budget, float(pcap))
    free = [0.0] * n_prefill  # heap of the times the prefill replicas become free
    busy = 0.0
    steps = 0
    ready_at = [0.0] * n
    transfer: dict[int, float] = {}
    i = 0
    while i < n:
        t = max(heapq.heappop(free), arrival[i])
        j, tokens = i, 0
        hit = reqs.cached  # prompt tokens in the prefix cache: context, not computed
        while j < n and arrival[j] <= t and j - i < pbatch and (j == i or tokens + inp[j] - hit[j] <= token_limit):
            tokens += inp[j] - hit[j]
            j += 1
        dt = prefill_times.pieces(tokens, sum((inp[r] - hit[r]) * (hit[r] + (inp[r] - hit[r]) * 0.5)
                                              for r in range(i, j)), j - i, sum(hit[i:j]))
        end = t + dt
        busy += dt
        steps += 1
        heapq.heappush(free, end)
        for r in range(i, j):
            p = inp[r]
            move = transfer.get(p)
            if move is None:
                move = transfer[p] = model.kv_transfer_time(p)
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
            engines.append(Continuous(k, times, reqs, cfg, ids, [ready_at[r] for r in ids], None, True))
    else:
        engines = [Continuous(k, times, reqs, cfg, [], [], None, False) for k in range(n_decode)]
        _route_least_loaded(engines, decode_ids, ready_at)
    for engine in engines:
        engine.advance(_INF)
    span = max(max(reqs.done), max(reqs.first)) - min(arrival)
    return engines, (busy / (n_prefill * span) if span > 0 else math.nan), steps
