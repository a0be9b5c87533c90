"""Request-level serving simulator: schedulers, KV admission and preemption, disaggregation, fleets.

The engine is simulated one iteration (engine step) at a time, as the schedulers of Orca (Yu et
al., OSDI 2022: iteration-level scheduling, requests join and leave the batch between steps),
vLLM (Kwon et al., SOSP 2023: paged KV cache, admission by free KV blocks, preemption by
recompute) and Sarathi-Serve (Agrawal et al., OSDI 2024: chunked prefill, prompt chunks
piggybacked on decode steps) do. A replica is known only through a
:class:`~clusterplan.inference.engine.StepModel`; step times come from
:mod:`~clusterplan.inference.steptimes` (exact tables of the model's separable step terms, or
direct calls) and the engine loops live in :mod:`~clusterplan.inference.schedulers`.

Conventions (all schedulers)
----------------------------
* A prefill over a prompt yields the first output token at the end of its step. A decoding
  sequence counts its prompt plus the tokens it has produced so far, the one being decoded
  included (``input + 1`` in the step after its first token); ``decode_time(batch, context)`` gets
  the sum over the batch. A request with ``o`` output tokens needs ``o - 1`` decode steps after its
  prefill and at most ``prompt + o`` KV tokens.
* TTFT = first token - arrival; TPOT = (finish - first token) / (o - 1), NaN when ``o == 1``;
  E2E = finish - arrival. Tokens stream: a request finishes at the step producing its last token.
  A model's ``request_latency_s`` (server, tokenisation, streaming: outside the engine's steps)
  is added to every TTFT and E2E.
* Several prompts (or prompt chunks) in one step each attend over their own sequence only, as
  packed ("ragged") prefill kernels do: a model with separable terms is charged their own causal
  query-key pairs; a model called directly can only be asked for one prompt of their total
  (``prefill_time``/``mixed_time``), which over-counts their attention.
* Prefix caching: a model with ``prefix_cache_hit = F`` has the first ``floor(F x prompt)``
  tokens of each prompt in its KV cache, so every scheduler prefills only the rest, as a
  continuation over that context (their attention reads it); the request's KV footprint is its
  whole prompt plus output, as before (:mod:`~clusterplan.inference.acceleration`).
* Sliding-window models (a step model with ``windowed`` and ``kv_tokens``, e.g. gpt-oss, Gemma):
  a window layer keeps only the last W positions of a sequence (vLLM's sliding-window KV
  manager; :meth:`~clusterplan.specs.Model.kv_positions`), so a request of ``prompt + output``
  tokens reserves ``ceil(kv_tokens(prompt + output))`` token-equivalents, not its length, and
  the one-request fit check uses the same. KV utilisation counts ``n * kv_tokens(total / n)``
  over the ``n`` sequences holding ``total`` tokens (an upper bound, ``kv_tokens`` being
  concave). Not windowed (yet): ``optimistic`` admission and preemption, which compare context
  totals with the capacity (an upper bound on the KV), and the ``static`` batch's padded fit. Speculative
  decoding needs nothing here: the model's decode step is per token (iteration over expected
  tokens).
* KV admission (``admission``): ``"reserve"`` (default) admits a request only if its prompt plus
  its whole output fit in the KV not already reserved, so a sequence never has to be preempted;
  ``"optimistic"`` (vLLM-like) admits it if its prompt fits with one token of headroom per
  sequence, and when a step would overflow the KV it preempts by *recompute*: the newest admitted
  request is evicted, its KV dropped, and it goes back to the head of the queue; re-admitted, it
  prefills its prompt plus the tokens it had generated and continues. The oldest admitted request
  is never evicted while others run, so every request completes.
* Queues are first come, first served: the first request that does not fit blocks those behind it.
* Engine limit: at most ``max_batch`` (the model's, or the smaller ``max_batch`` argument)
  sequences hold KV at once (decoding or prefilling).
* When nothing is running or admissible, the clock jumps to the next arrival. Closed-loop
  workloads (``concurrency`` set) issue their first ``concurrency`` requests at t = 0 and the next
  one whenever a request finishes.

Schedulers
----------
``chunked`` (default; Sarathi-Serve, vLLM's and TensorRT-LLM's chunked prefill)
    Waiting requests are admitted while KV and ``max_batch`` allow. Each step has a budget of
    ``chunk_tokens`` (8192) tokens in which every running sequence's decode counts one: it
    decodes every running sequence and prefills the rest of the budget from admitted, not yet
    prefilled sequences in admission order (a prompt longer than what is left continues over
    several steps; when the decodes take the whole budget, nothing is prefilled). That is
    Sarathi-Serve's token budget (Agrawal et al., OSDI 2024, stall-free batching: decodes first, then prefill
    chunks up to the budget), vLLM V1's ``max_num_batched_tokens`` (running requests are
    scheduled before waiting ones, a decode costing one token of the budget;
    ``vllm/v1/core/sched/scheduler.py``) and TensorRT-LLM's ``max_num_tokens`` (a generation
    request counts its one token, context chunks fill the rest). A step is costed as a mixed
    step when it does both, else as a decode or prefill step.
``continuous`` (vLLM V0's default: iteration-level batching with prefill priority)
    Before each step, waiting requests are admitted while KV, ``max_batch`` and
    ``max_prefill_tokens`` allow; if any were, the step is a prefill step over all their prompts
    (decodes wait), else a decode step of all running sequences.
``static``
    Fixed batches. When the replica is idle it dispatches a batch once ``max_batch`` requests
    wait, or the oldest has waited ``batch_timeout_s``, or no further request can arrive. The batch
    is prefilled in one step, then decoded until its longest request ends; finished sequences stay
    as padding (every slot holds its prompt plus the longest output's KV, and the batch must fit
    that way), and nothing joins until it ends.
``disaggregated`` (Splitwise, Patel et al., ISCA 2024; DistServe, Zhong et al., OSDI 2024)
    ``prefill_replicas`` prefill replicas (model ``prefill_model``, default the same) serve one
    FCFS queue: a free replica takes every waiting prompt up to ``max_prefill_tokens`` (and its KV
    capacity and ``max_batch``) into one prefill step. The KV then moves to a decode replica in
    ``prefill_model.kv_transfer_time(prompt)`` (transfers do not contend); the first token reaches
    the user when the transfer ends. ``decode_replicas`` decode replicas run ``continuous``
    batching of decode steps only, routed by ``router``; one that preempts recomputes the evicted
    request's KV itself with a prefill step. One-token requests end at their first token.

Fleets
------
``replicas > 1`` simulates identical replicas behind a router: ``round_robin`` deals arrivals in
turn; ``least_loaded`` sends each arrival to the replica with the fewest unfinished requests at
that moment (ties to the lowest index). Closed-loop workloads split the clients evenly across
replicas. Metrics are merged over all requests; KV utilisation is the mean over replicas.

:func:`max_rate_at_slo` finds the highest Poisson arrival rate at which the replica meets p99
TTFT and TPOT targets, by bracketing and bisection over :class:`ServingLoad`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from clusterplan.errors import SpecError
from clusterplan.inference.engine import StepModel
from clusterplan.inference.schedulers import Config, Requests, run_disaggregated, run_fleet
from clusterplan.inference.steptimes import StepTimes
from clusterplan.inference.workload import Workload, poisson
from clusterplan.specs._base import Spec

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

METRICS = ("ttft", "tpot", "e2e")
SCHEDULERS = ("chunked", "continuous", "static", "disaggregated")
ROUTERS = ("round_robin", "least_loaded")
ADMISSIONS = ("reserve", "optimistic")


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
    """Per-request times of one simulation (arrays indexed like the workload, read-only) and engine
    totals. ``arrival_s`` is when each request was issued (the workload's arrival, or for a closed
    loop the time a client sent it).

    ``iterations`` and ``busy_s`` add up the engine steps of every replica (prefill pool included,
    disaggregated); ``mean_batch`` averages over the steps of the (decode) replicas.
    ``kv_time_s`` / ``kv_utilisation``: KV-cache utilisation (tokens held / capacity, mean over
    replicas) averaged over equal intervals from the first arrival to the last finish
    (``kv_time_s`` holds their starts). ``stats``: ``max_concurrent_sequences`` (most sequences
    holding KV on one replica), ``kv_utilisation_mean`` (time mean), ``kv_utilisation_peak``,
    ``preemptions`` (total) and, disaggregated, ``prefill_busy_fraction``.
    """

    arrival_s: FloatArray
    first_token_s: FloatArray
    finish_s: FloatArray
    input_tokens: IntArray
    output_tokens: IntArray
    iterations: int
    busy_s: float
    #: Sequences in a step (decoding + prefilling), averaged over steps.
    mean_batch: float
    scheduler: str = "chunked"
    replicas: int = 1
    #: Replica that served each request (decode replica when disaggregated; -1: prefill pool only).
    replica: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Times each request was preempted.
    preemptions: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    kv_time_s: FloatArray = field(default_factory=lambda: np.zeros(0))
    kv_utilisation: FloatArray = field(default_factory=lambda: np.zeros(0))
    stats: dict[str, float] = field(default_factory=dict)
    #: The step model's latency outside the engine (server, tokenisation, streaming) per request.
    request_latency_s: float = 0.0

    @property
    def ttft_s(self) -> FloatArray:
        """Time to first token: arrival to the end of the step that completes the prefill (plus the
        KV transfer, disaggregated), plus the request latency outside the engine."""
        return self.first_token_s - self.arrival_s + self.request_latency_s

    @property
    def tpot_s(self) -> FloatArray:
        """Time per output token after the first; NaN for one-token outputs."""
        with np.errstate(divide="ignore", invalid="ignore"):
            tpot = (self.finish_s - self.first_token_s) / (self.output_tokens - 1)
        return np.where(self.output_tokens > 1, tpot, np.nan)

    @property
    def e2e_s(self) -> FloatArray:
        return self.finish_s - self.arrival_s + self.request_latency_s

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
    def total_tokens_per_s(self) -> float:
        """Prompt and output tokens per second over the span."""
        span = self.span_s
        total = float(self.input_tokens.sum() + self.output_tokens.sum())
        return total / span if span > 0 else math.inf

    @property
    def requests_per_s(self) -> float:
        span = self.span_s
        return len(self.arrival_s) / span if span > 0 else math.inf

    def within_slo(self, ttft_s: float | None = None, tpot_s: float | None = None) -> NDArray[np.bool_]:
        """Requests whose own TTFT <= ``ttft_s`` and TPOT <= ``tpot_s`` (``None``: no bound; one-token
        outputs have no TPOT)."""
        ok = np.ones(len(self.arrival_s), dtype=bool)
        if ttft_s is not None:
            ok &= self.ttft_s <= ttft_s
        if tpot_s is not None:
            ok &= np.isnan(self.tpot_s) | (self.tpot_s <= tpot_s)
        return ok

    def goodput(self, ttft_s: float | None = None, tpot_s: float | None = None) -> dict[str, float]:
        """Throughput of the requests that met both targets, over the whole span (DistServe's
        goodput: Zhong et al., OSDI 2024), and the share of requests that did."""
        ok = self.within_slo(ttft_s, tpot_s)
        span = self.span_s
        per_s = 1.0 / span if span > 0 else math.inf
        return {"slo_attainment": float(ok.mean()), "goodput_requests_per_s": float(ok.sum()) * per_s,
                "goodput_output_tokens_per_s": float(self.output_tokens[ok].sum()) * per_s}

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in ("ttft", "tpot"):
            for q in (50, 90, 99):
                out[f"{metric}_p{q}_s"] = self.percentile(metric, q)
        out["output_tokens_per_s"] = self.output_tokens_per_s
        out["requests_per_s"] = self.requests_per_s
        out["mean_batch"] = self.mean_batch
        return out

    def record(self, ttft_s: float | None = None, tpot_s: float | None = None) -> dict[str, Any]:
        """JSON-ready summary: :meth:`summary`'s keys; ``total_tokens_per_s``; the same throughputs as
        ``throughput_output_tokens_per_s`` / ``throughput_total_tokens_per_s``; ``ttft_s``, ``tpot_s``
        and ``e2e_s`` as ``{p50, p90, p99, mean}``; goodput and ``slo_attainment`` under the targets
        (every request counts when none is given); ``kv_utilisation {mean, peak, series:
        {time_s, value}}``; ``preemptions``, ``max_concurrent_sequences``, ``steps``, ``scheduler``,
        ``replicas`` (and ``prefill_busy_fraction`` when disaggregated)."""
        out: dict[str, Any] = {**self.summary(), "total_tokens_per_s": self.total_tokens_per_s,
                               "throughput_output_tokens_per_s": self.output_tokens_per_s,
                               "throughput_total_tokens_per_s": self.total_tokens_per_s}
        for metric in METRICS:
            values = {"ttft": self.ttft_s, "tpot": self.tpot_s, "e2e": self.e2e_s}[metric]
            finite = values[~np.isnan(values)]
            out[f"{metric}_s"] = {**{f"p{q}": self.percentile(metric, q) for q in (50, 90, 99)},
                                  "mean": float(finite.mean()) if finite.size else math.nan}
        out.update(self.goodput(ttft_s, tpot_s))
        out["kv_utilisation"] = {"mean": self.stats.get("kv_utilisation_mean", math.nan),
                                 "peak": self.stats.get("kv_utilisation_peak", math.nan),
                                 "series": {"time_s": self.kv_time_s.tolist(), "value": self.kv_utilisation.tolist()}}
        out["preemptions"] = int(self.stats.get("preemptions", 0))
        out["max_concurrent_sequences"] = int(self.stats.get("max_concurrent_sequences", 0))
        out["steps"] = self.iterations
        out["scheduler"] = self.scheduler
        out["replicas"] = self.replicas
        if "prefill_busy_fraction" in self.stats:
            out["prefill_busy_fraction"] = self.stats["prefill_busy_fraction"]
        return out


# ---------------------------------------------------------------------------------------------- simulation


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


def _check_fit(inputs: IntArray, need: IntArray, cap: int, what: str) -> None:
    too_big = np.flatnonzero(need > cap)
    if too_big.size:
        i = int(too_big[0])
        raise SpecError("input_tokens", int(inputs[i]),
                        f"request {i}: {what} = {int(need[i])} tokens exceed the replica's whole KV "
                        f"cache of {cap} tokens, so it can never be admitted")


def simulate(
    replica: StepModel,
    workload: Workload,
    scheduler: str = "chunked",
    *,
    chunk_tokens: int = 8192,
    replicas: int = 1,
    router: str = "round_robin",
    admission: str = "reserve",
    max_batch: int | None = None,
    max_prefill_tokens: int | None = 8192,
    batch_timeout_s: float = 0.0,
    prefill_model: StepModel | None = None,
    prefill_replicas: int = 1,
    decode_replicas: int = 1,
    kv_series_points: int = 200,
    step_tables: bool = True,
) -> ServingResult:
    """Serve ``workload`` on replicas whose steps ``replica`` times (see the module doc).

    The default is today's engine: one replica, ``chunked`` with 8192-token chunks, KV reserved at
    admission. ``max_batch`` lowers the model's engine limit (static: the batch size);
    ``max_prefill_tokens`` caps the prompt tokens of one prefill step (continuous, disaggregated;
    ``None``: no cap; a longer prompt still goes alone); ``batch_timeout_s`` is the static
    scheduler's longest wait to fill a batch. ``step_tables=False`` calls the model for every step
    (see :mod:`~clusterplan.inference.steptimes`). Refusals (:class:`SpecError`): unknown scheduler,
    router or admission; counts below 1; a request whose prompt + output exceeds the KV cache.
    """
    if scheduler not in SCHEDULERS:
        raise SpecError("scheduler", scheduler, f"must be one of {', '.join(SCHEDULERS)}")
    router = router.replace("-", "_") if isinstance(router, str) else router
    if router not in ROUTERS:
        raise SpecError("router", router, f"must be one of {', '.join(r.replace('_', '-') for r in ROUTERS)}")
    if admission not in ADMISSIONS:
        raise SpecError("admission", admission, f"must be one of {', '.join(ADMISSIONS)}")
    if not isinstance(workload, Workload):
        raise SpecError("workload", type(workload).__name__, "must be a Workload")
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int | np.integer) or chunk_tokens < 1:
        raise SpecError("chunk_tokens", chunk_tokens, "must be a whole number of tokens >= 1")
    replicas = _positive_int("replicas", replicas)
    kv_series_points = _positive_int("kv_series_points", kv_series_points)
    budget = math.inf if max_prefill_tokens is None else _positive_int("max_prefill_tokens", max_prefill_tokens)
    if not (isinstance(batch_timeout_s, int | float) and batch_timeout_s >= 0 and not math.isnan(batch_timeout_s)):
        raise SpecError("batch_timeout_s", batch_timeout_s, "must be a number of seconds >= 0")
    cap, engine_batch = _check_model("model", replica)
    if max_batch is not None:
        engine_batch = min(engine_batch, _positive_int("max_batch", max_batch))
    need = workload.input_tokens + workload.output_tokens
    kv_tokens = _kv_tokens(replica)
    kv_need = need if kv_tokens is None else np.ceil(kv_tokens(need)).astype(need.dtype)
    reqs = Requests(workload, _cached_prompt_tokens(replica, workload),
                    None if kv_tokens is None else kv_need.tolist())
    cfg = Config(cap=cap, max_batch=engine_batch, reserve=admission == "reserve", prefill_budget=budget,
                 chunk_tokens=int(chunk_tokens), batch_timeout_s=float(batch_timeout_s),
                 kv_tokens=None if kv_tokens is None else (lambda x: float(kv_tokens(x))))
    table_tokens = int(chunk_tokens) if scheduler == "chunked" else int(min(budget, 65_536))
    times = StepTimes(replica, table_tokens, tables=step_tables)
    extra: dict[str, float] = {}
    prefill_steps = 0
    prefill_busy = 0.0
    if scheduler == "disaggregated":
        if replicas != 1:
            raise SpecError("replicas", replicas, "with the disaggregated scheduler, size the pools with "
                            "prefill_replicas and decode_replicas")
        if workload.closed_loop:
            raise SpecError("workload", "closed loop", "the disaggregated scheduler takes open-loop workloads")
        prefill_replicas = _positive_int("prefill_replicas", prefill_replicas)
        decode_replicas = _positive_int("decode_replicas", decode_replicas)
        pmodel = replica if prefill_model is None else prefill_model
        pcap, pbatch = _check_model("prefill_model", pmodel)
        _check_fit(workload.input_tokens, workload.input_tokens, pcap, "prompt")
        _check_fit(workload.input_tokens, kv_need, cap, "prompt + output")
        if max_batch is not None:
            pbatch = min(pbatch, engine_batch)
        ptimes = times if pmodel is replica else StepTimes(pmodel, table_tokens, tables=step_tables)
        engines, busy, prefill_steps = run_disaggregated(reqs, times, ptimes, cfg, pcap, pbatch,
                                                         prefill_replicas * _engines(pmodel),
                                                         decode_replicas * _engines(replica), router)
        extra["prefill_busy_fraction"] = busy
        span = float(np.nanmax(reqs.done)) - float(np.min(workload.arrival_s))
        prefill_busy = busy * prefill_replicas * _engines(pmodel) * span if span > 0 else 0.0
        n_replicas = decode_replicas
    else:
        _check_fit(workload.input_tokens, kv_need, cap, "prompt + output")
        # A pipeline-parallel replica keeps ``engines`` micro-batches in flight: fleet members.
        engines = run_fleet(reqs, workload, times, cfg, scheduler, replicas * _engines(replica), router)
        n_replicas = replicas
    return _result(scheduler, n_replicas, workload, reqs, engines, kv_series_points, extra, prefill_steps,
                   prefill_busy, _request_latency(replica))


def _cached_prompt_tokens(model: StepModel, workload: Workload) -> list[int] | None:
    """Each prompt's tokens found in the prefix cache: ``floor(F x prompt)`` (at most all but the
    last) for a model with ``prefix_cache_hit = F`` (optional, default 0; see
    :mod:`~clusterplan.inference.acceleration`); ``None`` without a cache."""
    hit = float(getattr(model, "prefix_cache_hit", 0.0) or 0.0)
    if not hit:
        return None
    from clusterplan.inference.acceleration import cached_tokens

    return [int(h) for h in cached_tokens(workload.input_tokens, hit)]


def _kv_tokens(model: StepModel) -> Callable[[Any], Any] | None:
    """The model's ``kv_tokens(length)`` (optional): KV token-equivalents a sequence of
    ``length`` tokens holds, below ``length`` for a sliding-window model
    (:meth:`clusterplan.specs.Model.kv_positions`); ``None`` when it is the length itself."""
    kv_tokens: Callable[[Any], Any] | None = getattr(model, "kv_tokens", None)
    if kv_tokens is None or not getattr(model, "windowed", False):
        return None
    return kv_tokens


def _engines(model: StepModel) -> int:
    """Engines one replica runs at once (pipeline micro-batches in flight; 1 unless the model
    says otherwise, see ``ReplicaModel.engines``)."""
    return max(int(getattr(model, "engines", 1)), 1)


def _request_latency(model: StepModel) -> float:
    """The model's per-request latency outside the engine (0 unless it says otherwise, see
    ``ReplicaModel.request_latency_s``)."""
    return float(getattr(model, "request_latency_s", 0.0))


def _result(scheduler: str, replicas: int, workload: Workload, reqs: Requests, engines: list[Any], points: int,
            extra: dict[str, float], prefill_steps: int, prefill_busy: float,
            request_latency_s: float) -> ServingResult:
    arrival = np.array(reqs.issue, dtype=np.float64)
    first = np.array(reqs.first, dtype=np.float64)
    done = np.array(reqs.done, dtype=np.float64)
    if not (np.all(np.isfinite(done)) and np.all(first >= arrival) and np.all(done >= first)):
        raise SpecError("model", type(engines[0].times.model).__name__ if engines else "model",
                        "step times must be finite and >= 0")
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
        kv_mean = float(util.mean())
    else:
        edges, util = np.array([t0, t1]), np.zeros(1)
        kv_mean = math.nan
    engine_steps = sum(e.steps for e in engines)
    iterations = engine_steps + prefill_steps
    batch_sum = sum(e.batch_sum for e in engines)
    stats = {
        "max_concurrent_sequences": float(max((e.max_conc for e in engines), default=0)),
        "kv_utilisation_mean": kv_mean,
        "kv_utilisation_peak": max((e.kv_peak / e.cap for e in engines), default=0.0),
        "preemptions": float(sum(reqs.npre)),
        **extra,
    }
    result = ServingResult(
        arrival_s=arrival, first_token_s=first, finish_s=done, input_tokens=workload.input_tokens.copy(),
        output_tokens=workload.output_tokens.copy(), iterations=iterations,
        busy_s=sum(e.busy for e in engines) + prefill_busy,
        mean_batch=batch_sum / engine_steps if engine_steps else 0.0, scheduler=scheduler, replicas=replicas,
        replica=np.array(reqs.replica, dtype=np.int64), preemptions=np.array(reqs.npre, dtype=np.int64),
        kv_time_s=edges[:-1], kv_utilisation=util, stats=stats,
        request_latency_s=request_latency_s)
    for array in (result.arrival_s, result.first_token_s, result.finish_s, result.input_tokens,
                  result.output_tokens, result.replica, result.preemptions, result.kv_time_s, result.kv_utilisation):
        array.setflags(write=False)
    return result


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
                    tolerance: float = 0.05, chunk_tokens: int = 8192, max_doublings: int = 12,
                    hopeless: Callable[[float], bool] | None = None, **options: Any) -> float:
    """Highest arrival rate (requests/s) at which ``replica`` meets both p99 targets on ``workload``
    with its rate replaced (all other fields, the seed included, fixed).

    Starts from the analytic saturated rate (``offline_throughput`` output tokens/s over the mean
    output length) when the replica has one, else from the rate of one request served alone;
    doubles until the SLO is missed, then bisects until the bracket is within ``tolerance``
    (relative) and returns its lower end. Returns 0.0 if the SLO is missed even at 1/100 of that
    starting rate. If it is still met after ``max_doublings`` doublings (a loose SLO on a finite
    workload), returns the last rate tried.

    Because :func:`sample` scales one set of exponential gaps by the rate, a looser SLO never gives
    a lower rate: at every rate tried it passes whenever the tighter one does. ``options`` go to
    :func:`simulate` (scheduler, replicas, router, ...): the rate is then the whole unit's.

    ``hopeless(rate)``, for a caller that only needs rates above some threshold, is called with
    the bracket's upper end each time the bisection lowers it: once it returns True the answer
    is known to be below ``rate``, and the search returns the lower end at once (a rate that meets
    the SLO, not the highest).
    """
    if not 0 < tolerance < 1:
        raise SpecError("tolerance", tolerance, "must be between 0 and 1 (relative)")

    def ok(rate: float) -> bool:
        result = simulate(replica, sample(workload.model_copy(update={"rate_per_s": rate})),
                          chunk_tokens=chunk_tokens, **options)
        return meets_slo(result, ttft_p99_s, tpot_p99_s)

    start = _saturated_rate(replica, workload)
    if start is None or not math.isfinite(start) or start <= 0:
        isl, osl = workload.input_tokens, workload.output_tokens
        alone = (replica.prefill_time(isl, 0) + _request_latency(replica)
                 + (osl - 1) * replica.decode_time(1, isl + osl // 2))
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
            if hopeless is not None and hopeless(hi):
                break
    return lo
