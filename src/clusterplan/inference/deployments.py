"""Deployment search for a serving demand: which replica layout serves it cheapest.

A *deployment* is one replica's layout and number formats (TP, PP, EP, attention DP for MoE
models, weight and KV-cache precision). For a demand in output tokens/s at a p99 TTFT/TPOT SLO,
every candidate deployment needs ``ceil(demand / per-replica rate)`` replicas, where the per-replica rate is the highest
request rate at which the simulator (``inference/serving.py``) still meets the SLO, capped at
the analytic saturated rate (``ReplicaModel.offline_throughput``): above saturation a queue grows
without bound, whatever a finite simulated run says.

The search is exact with respect to the simulator and cheap where it can be:

1. *Screens* reject a candidate without simulating it: the weights do not fit, the KV cache
   cannot hold one request, or one request served alone already misses TTFT or TPOT (queueing
   only adds to both).
2. *Bound.* The saturated rate is an upper bound on the per-replica rate, so the chips, power
   and dollars computed at it are lower bounds on the candidate's true figures. Candidates are
   simulated in order of their bound, and the search stops once the next bound is no better
   than the ``top``-th best figure found: nothing left can enter the ranking.
3. *Early stop.* Chips, power and dollars never fall as a candidate's per-replica rate falls
   (more replicas of the same layout; the energy of the demand's tokens is shared, the idle
   power is not), so once the rate search's bracket is below the rate at which the candidate
   would tie the ``top``-th best, the candidate cannot enter the ranking and its search stops.

Objective: ``cost`` ($ per million output tokens, TCO), ``chips`` or ``power`` (facility W).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from clusterplan.errors import NoAnswerError, SpecError
from clusterplan.inference.acceleration import SPECULATIVE_OPTION, ServingReplica, Speculation, serving_replica
from clusterplan.inference.capacity import Slo, plan_demand
from clusterplan.inference.serving import ServingLoad, max_rate_at_slo
from clusterplan.inference.stacks import apply_stack
from clusterplan.inference.step import Deployment, ReplicaModel
from clusterplan.specs import Model
from clusterplan.training.step import Hardware

OBJECTIVES = ("cost", "chips", "power")
WEIGHT_FORMATS = ("bf16", "fp8", "fp4")
KV_FORMATS = ("bf16", "fp8")
PIPELINE_DEGREES = (1, 2, 4, 8)


def objective_value(objective: str, demand: dict[str, Any]) -> float:
    """The figure a demand plan is ranked by (lower is better)."""
    if objective == "chips":
        return float(demand["chips"])
    if objective == "power":
        return float(demand["power_w"]["facility_w"])
    return float(demand.get("usd_per_million_output_tokens", math.inf))


def candidate_deployments(model: Model, hardware: Hardware, weights: Iterable[str], kv_caches: Iterable[str],
                          max_chips_per_replica: int, max_batch: int | None,
                          stack: str | None = None) -> list[Deployment]:
    """Every layout to consider: TP a power of two inside the scale-up domain that divides the
    attention heads, PP in 1/2/4/8, replicas of at most ``max_chips_per_replica`` chips; MoE
    models spread their experts over the replica's chips (EP = the largest divisor of the expert
    count not above TP*PP), and also run attention data-parallel: ``attention_dp`` a power of two
    from 2 (TP1 ranks, within or across scale-up domains: wide EP), the experts over the stage's
    ranks (EP = the largest divisor of the expert count that divides ``attention_dp``)."""
    scale_up = hardware.system.scale_up_size
    tps = [t for t in (2**i for i in range(11)) if t <= scale_up and model.attention_heads % t == 0]
    layouts: list[tuple[int, int, int, int]] = []  # (attention_dp, tp, pp, ep)
    for pp in PIPELINE_DEGREES:
        if pp > model.layers:
            continue
        for tp in tps:
            chips = tp * pp
            if chips > max_chips_per_replica:
                continue
            ep = 1
            if model.moe is not None:
                ep = max(e for e in range(1, chips + 1) if model.moe.experts % e == 0 and chips % e == 0)
            layouts.append((1, tp, pp, ep))
        if model.moe is not None:
            moe = model.moe
            for dp in (2**i for i in range(1, 11)):
                if dp * pp > max_chips_per_replica:
                    break
                ep = max(e for e in range(1, dp + 1) if moe.experts % e == 0 and dp % e == 0)
                layouts.append((dp, 1, pp, ep))
    # max_batch None: the default (2048, or the stack's); a stack fills the fields not set
    settings: dict[str, Any] = {**({"max_batch": max_batch} if max_batch is not None else {}),
                                **({"stack": stack} if stack is not None else {})}
    return [Deployment(attention_dp=dp, tp=tp, pp=pp, ep=ep, weights=weight, kv_cache=kv, **settings)
            for dp, tp, pp, ep in sorted(layouts, key=lambda x: (x[0] > 1, x[1], x[2], x[0]))
            for weight in weights for kv in kv_caches]


@dataclass
class Candidate:
    """One deployment's way through the search."""

    deployment: Deployment
    replica: ReplicaModel | None = None
    rejected: str | None = None
    #: single-request TTFT and TPOT over their targets (> 1: misses even when alone)
    alone_ratio: float = math.nan
    alone_ttft_s: float = math.nan
    alone_tpot_s: float = math.nan
    saturated_rate: float = math.nan
    bound: float = math.inf
    rate: float | None = None
    demand: dict[str, Any] | None = None
    score: float = math.inf
    #: the engine stack's record (inference/stacks.py), when the deployment names one
    stack: dict[str, Any] | None = None

    def label(self) -> str:
        d = self.deployment
        return f"{d.label()} {d.weights}/{d.kv_cache}"

    def record(self, output_tokens: int) -> dict[str, Any]:
        assert self.demand is not None and self.rate is not None and self.replica is not None
        accelerated = self.replica.record() if isinstance(self.replica, ServingReplica) else {}
        stack = {"stack": self.stack} if self.stack is not None else {}
        return {"deployment": self.deployment.record(), "label": self.label(), **accelerated, **stack,
                "chips_per_replica": self.deployment.chips,
                "kv_capacity_tokens": self.replica.kv_capacity_tokens * self.replica.engines,
                "kv_capacity_tokens_per_rank": (self.replica.kv_capacity_tokens * self.replica.engines
                                                // self.deployment.attention_dp),
                "requests_per_s_per_replica": self.rate,
                "output_tokens_per_s_per_replica": self.rate * output_tokens,
                "saturated_requests_per_s": self.saturated_rate,
                "alone_ttft_s": self.alone_ttft_s, "alone_tpot_s": self.alone_tpot_s, **self.demand}


@dataclass
class SearchResult:
    ranked: list[Candidate]
    candidates: list[Candidate] = field(default_factory=list)
    simulated: int = 0


def _screen(model: Model, hardware: Hardware, deployment: Deployment, input_tokens: int, output_tokens: int,
            slo: Slo, speculation: Speculation | None = None, draft_model: Model | None = None,
            prefix_cache_hit: float = 0.0) -> Candidate:
    try:
        deployment, stack = apply_stack(deployment, hardware, input_tokens, output_tokens,
                                        speculation.method if speculation is not None else None)
    except SpecError as error:
        return Candidate(deployment, rejected=f"stack: {error.rule}")
    candidate = Candidate(deployment, stack=stack)
    try:
        replica = serving_replica(model, hardware, deployment, speculation=speculation, draft_model=draft_model,
                                  prefix_cache_hit=prefix_cache_hit)
    except SpecError as error:
        # e.g. speculative decoding with pipeline parallelism (not modelled): its own reason
        pipelined = error.field == SPECULATIVE_OPTION and deployment.pp > 1
        reason = "speculation with pp > 1" if pipelined else "does not fit"
        candidate.rejected = f"{reason}: {error.rule}"
        return candidate
    candidate.replica = replica
    # a sliding-window model's request holds kv_positions(length) token-equivalents (serving doc)
    if math.ceil(float(replica.kv_tokens(input_tokens + output_tokens))) > replica.kv_capacity_tokens:
        candidate.rejected = (f"KV cache ({replica.kv_capacity_tokens:,} tokens) cannot hold one "
                              f"{input_tokens}+{output_tokens}-token request")
        return candidate
    candidate.alone_ttft_s = replica.single_request_ttft(input_tokens)
    candidate.alone_tpot_s = replica.decode_time(1, input_tokens + output_tokens // 2) if output_tokens > 1 else 0.0
    candidate.alone_ratio = max(candidate.alone_ttft_s / slo.ttft_p99_s, candidate.alone_tpot_s / slo.tpot_p99_s)
    if candidate.alone_ratio > 1.0:
        candidate.rejected = "misses the SLO with one request alone"
        return candidate
    steady = replica.offline_throughput(input_tokens, output_tokens)
    candidate.saturated_rate = float(steady["output_tokens_per_s"]) / output_tokens
    return candidate


def search_deployments(model: Model, hardware: Hardware, demand_output_tokens_per_s: float, slo: Slo,
                       input_tokens: int, output_tokens: int, *, objective: str = "cost",
                       weights: Iterable[str] = ("bf16", "fp8"), kv_caches: Iterable[str] = KV_FORMATS,
                       max_chips_per_replica: int = 64, max_batch: int | None = 2048, top: int = 5,
                       requests: int = 1000, length_spread: float = 0.0, seed: int = 0,
                       progress: Callable[[int, int], None] | None = None,
                       speculation: Speculation | None = None, draft_model: Model | None = None,
                       prefix_cache_hit: float = 0.0, stack: str | None = None) -> SearchResult:
    """Rank deployments of ``model`` on ``hardware`` for a demand at ``slo`` (see module doc).

    ``speculation`` (with its ``draft_model``) and ``prefix_cache_hit`` apply to every candidate
    (:func:`~clusterplan.inference.acceleration.serving_replica`): the draft's weights and KV share
    each candidate's memory, and pipeline-parallel candidates are rejected with speculation (not
    modelled). ``stack`` names the engine every candidate runs (:mod:`~clusterplan.inference.stacks`:
    its defaults fill the fields not set; ``max_batch`` None leaves the batch limit to it).

    Raises :class:`NoAnswerError` (exit code 1) naming the SLO when no deployment meets it, with the
    closest miss.
    ``progress(done, total)`` is called after each simulated candidate.
    """
    if objective not in OBJECTIVES:
        raise SpecError("--objective", objective, f"must be one of {', '.join(OBJECTIVES)}")
    if top < 1:
        raise SpecError("--top", top, "must be >= 1")
    deployments = candidate_deployments(model, hardware, weights, kv_caches, max_chips_per_replica, max_batch, stack)
    if not deployments:
        raise NoAnswerError("--max-chips-per-replica", max_chips_per_replica,
                            f"no TP/PP layout of {model.name} fits in it on {hardware.system.name}")
    candidates = [_screen(model, hardware, d, input_tokens, output_tokens, slo, speculation, draft_model,
                          prefix_cache_hit) for d in deployments]
    viable = [c for c in candidates if c.rejected is None]
    for c in viable:
        assert c.replica is not None
        bound = plan_demand(c.replica, hardware, c.saturated_rate, input_tokens, output_tokens,
                            demand_output_tokens_per_s)
        c.bound = objective_value(objective, bound)
        if objective == "cost" and math.isinf(c.bound):
            raise SpecError("--objective", "cost", f"{bound.get('cost_note', 'no cost model')}: "
                            "use --objective chips or power")
    viable.sort(key=lambda c: c.bound)

    def demand_at(candidate: Candidate, rate: float) -> dict[str, Any]:
        assert candidate.replica is not None
        return plan_demand(candidate.replica, hardware, rate, input_tokens, output_tokens, demand_output_tokens_per_s)

    ranked: list[Candidate] = []
    simulated = 0
    for c in viable:
        if len(ranked) >= top and c.bound >= ranked[top - 1].score:
            break  # no candidate left can enter the top ranks (bounds are sorted)
        assert c.replica is not None
        load = ServingLoad(rate_per_s=c.saturated_rate, requests=requests, input_tokens=input_tokens,
                           output_tokens=output_tokens, length_spread=length_spread, seed=seed)
        outranked = _Outranked(c, ranked, top, objective, demand_at)
        rate = min(max_rate_at_slo(c.replica, load, slo.ttft_p99_s, slo.tpot_p99_s, hopeless=outranked),
                   c.saturated_rate)
        simulated += 1
        if progress is not None:
            progress(simulated, len(viable))
        if rate <= 0:
            c.rejected = "misses the SLO at every rate simulated (p99 under load)"
            continue
        if outranked.fired:
            continue  # its best rate is below one that would only tie the top-th: not ranked
        c.rate = rate
        c.demand = plan_demand(c.replica, hardware, rate, input_tokens, output_tokens, demand_output_tokens_per_s)
        c.score = objective_value(objective, c.demand)
        ranked.append(c)
        ranked.sort(key=lambda x: x.score)
    if not ranked:
        raise NoAnswerError(*_closest_miss(model, hardware, candidates, slo))
    return SearchResult(ranked=ranked[:top], candidates=candidates, simulated=simulated)


class _Outranked:
    """``max_rate_at_slo``'s ``hopeless`` test for one candidate: whether every rate up to the
    given one scores no better than the ``top``-th ranked candidate (scores never improve as the
    rate falls), so the candidate cannot enter the ranking. Remembers whether it ever said so."""

    def __init__(self, candidate: Candidate, ranked: list[Candidate], top: int, objective: str,
                 demand: Callable[[Candidate, float], dict[str, Any]]) -> None:
        self.candidate, self.ranked, self.top, self.objective, self.demand = candidate, ranked, top, objective, demand
        self.fired = False

    def __call__(self, rate: float) -> bool:
        if len(self.ranked) < self.top:
            return False
        rate = min(rate, self.candidate.saturated_rate)
        score = objective_value(self.objective, self.demand(self.candidate, rate))
        self.fired = score >= self.ranked[self.top - 1].score
        return self.fired



def _closest_miss(model: Model, hardware: Hardware, candidates: list[Candidate],
                  slo: Slo) -> tuple[str, object, str]:
    """The SLO field to blame and a rule naming the deployment that came closest."""
    timed = [c for c in candidates if not math.isnan(c.alone_ratio)]
    if not timed:
        reasons = sorted({c.rejected or "" for c in candidates})
        return ("--model", model.name, f"no deployment of {model.name} on {hardware.system.name} can hold it: "
                + "; ".join(reasons))
    best = min(timed, key=lambda c: c.alone_ratio)
    field_name, target = slo.furthest_off(best.alone_ttft_s, best.alone_tpot_s)
    under_load = " (alone it meets both; p99 under any load does not)" if best.alone_ratio <= 1 else ""
    return (field_name, target,
            f"no deployment of {model.name} on {hardware.system.name} meets p99 TTFT "
            f"{slo.ttft_p99_s * 1000:g} ms and TPOT {slo.tpot_p99_s * 1000:g} ms; closest: {best.label()} "
            f"with one request alone at TTFT {best.alone_ttft_s * 1000:.1f} ms and TPOT "
            f"{best.alone_tpot_s * 1000:.2f} ms{under_load}")
