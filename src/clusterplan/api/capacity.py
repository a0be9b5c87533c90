"""Which serving deployment meets this demand at this latency SLO, and what does it take?
(``clusterplan capacity``)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator

from clusterplan.api._base import Answer, Request, demand_field, latency_field
from clusterplan.api._edge import MAX_SIMULATED_REQUESTS, csv_items
from clusterplan.catalog import hardware_for, load_chip, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.specs.plan import MAX_CHIPS


class CapacityRequest(Request):
    """A demand in output tokens/s at p99 TTFT and TPOT targets. The demand and the targets may
    come as the CLI takes them (``5M``, ``2s``, a bare number of milliseconds)."""

    model: str
    system: str
    demand_output_tokens_per_s: float = Field(description="output tokens/s to serve (5e6, 5M, 5Mtok/s)")
    slo_ttft_s: float = Field(description="p99 time-to-first-token target (2s; a bare string number: ms)")
    slo_tpot_s: float = Field(description="p99 time-per-output-token target (100ms)")
    input_tokens: int = 1000
    output_tokens: int = 200
    objective: str = "cost"
    weights: str | None = Field(None, description="weight formats to consider, e.g. bf16,fp8")
    kv_cache: str = "bf16,fp8"
    max_chips_per_replica: int = 64
    max_batch: int | None = Field(None, description="engine batch limit (default 2048, or the stack's)")
    top: int = 5
    requests: int = 1000
    length_spread: float = 0.0
    seed: int = 0
    chip: str | None = None
    speculative: str | None = Field(
        None, description="speculative decoding on every candidate: draft=MODEL|mtp|eagle,tokens=K,acceptance=A")
    prefix_cache_hit: float = Field(0.0, description="fraction of each prompt found in the prefix cache, 0 <= F < 1")
    stack: str | None = Field(None, description="serving engine of every candidate: trtllm | vllm | sglang | neuron")

    @field_validator("demand_output_tokens_per_s", mode="before")
    @classmethod
    def demand(cls, value: Any) -> Any:
        return demand_field(value)

    @field_validator("slo_ttft_s", "slo_tpot_s", mode="before")
    @classmethod
    def latency(cls, value: Any, info: Any) -> Any:
        return latency_field(value, info.field_name)


class CapacityAnswer(Answer):
    """The ranked deployments (``record``: the ``capacity --json`` object)."""

    model: str
    system: str
    chip: str
    objective: str
    candidates: int
    simulated: int
    best_chips: int | None = None
    best_usd_per_million_tokens: float | None = None


def answer(request: CapacityRequest, progress: Callable[[int, int], None] | None = None) -> CapacityAnswer:
    """Search the deployments (TP, PP, EP, weight and KV formats), simulate the best at the SLO,
    rank by the objective. ``progress(done, total)`` is told as simulations finish."""
    from clusterplan.inference.capacity import CAPACITY_RATES, CAPACITY_TIMES, Slo, serving_bands
    from clusterplan.inference.deployments import KV_FORMATS, WEIGHT_FORMATS, search_deployments

    spec_model = load_model(request.model, "--model")
    spec_system = load_system(request.system, "--system")
    spec_chip = load_chip(request.chip, "--chip") if request.chip else None
    for name, value in (("--input-tokens", request.input_tokens), ("--output-tokens", request.output_tokens),
                        ("--max-chips-per-replica", request.max_chips_per_replica),
                        ("--max-batch", request.max_batch), ("--top", request.top), ("--requests", request.requests)):
        if value is not None and value < 1:
            raise SpecError(name, value, "must be >= 1")
    if request.max_chips_per_replica > MAX_CHIPS:
        raise SpecError("--max-chips-per-replica", request.max_chips_per_replica, f"must be <= {MAX_CHIPS:,}")
    if request.requests * request.top > MAX_SIMULATED_REQUESTS:
        raise SpecError("--requests", request.requests, f"requests x --top must be <= {MAX_SIMULATED_REQUESTS:,} "
                        f"(--top is {request.top}): each listed deployment is simulated, several times")
    if not 0.0 <= request.length_spread <= 3.0:
        raise SpecError("--length-spread", request.length_spread, "must be a coefficient of variation in [0, 3]")
    hardware = hardware_for(spec_system, spec_chip)
    from clusterplan.inference.stacks import STACKS, stack_defaults

    if request.stack is not None:
        if request.stack not in STACKS:
            raise SpecError("--stack", request.stack, f"must be one of {', '.join(STACKS)}")
        try:  # the stack must run on the chip
            stack_defaults(request.stack, hardware, 1, 1, 1)
        except SpecError as error:
            raise error.renamed("--stack") from None
    weights = request.weights
    if weights is None:  # the default: bf16, and fp8 where the chip has fp8 units
        weights = ",".join(p for p in ("bf16", "fp8") if p in hardware.chip.matmul_precisions())
    weight_formats = csv_items(weights, "--weights")
    kv_formats = csv_items(request.kv_cache, "--kv-cache")
    for name, chosen, allowed in (("--weights", weight_formats, WEIGHT_FORMATS),
                                  ("--kv-cache", kv_formats, KV_FORMATS)):
        for item in chosen:
            if item not in allowed:
                raise SpecError(name, item, f"must be among {', '.join(allowed)}")
    for item in weight_formats:  # weights are the matmul precision; an fp8 KV cache is storage
        hardware.chip.require(item, "--weights")
    slo = Slo(ttft_p99_s=request.slo_ttft_s, tpot_p99_s=request.slo_tpot_s)
    from clusterplan.inference.acceleration import check_prefix_cache_hit, parse_speculation

    speculation = parse_speculation(request.speculative) if request.speculative is not None else None
    draft_model = (load_model(speculation.draft, "--speculative")
                   if speculation is not None and speculation.draft is not None else None)
    prefix_cache_hit = check_prefix_cache_hit(request.prefix_cache_hit)
    result = search_deployments(spec_model, hardware, request.demand_output_tokens_per_s, slo, request.input_tokens,
                                request.output_tokens, objective=request.objective, weights=weight_formats,
                                kv_caches=kv_formats, max_chips_per_replica=request.max_chips_per_replica,
                                max_batch=request.max_batch, top=request.top, requests=request.requests,
                                length_spread=request.length_spread, seed=request.seed, progress=progress,
                                speculation=speculation, draft_model=draft_model, prefix_cache_hit=prefix_cache_hit,
                                stack=request.stack)
    rejected: dict[str, int] = {}
    for candidate in result.candidates:
        if candidate.rejected is not None:
            reason = candidate.rejected.split(":")[0]
            rejected[reason] = rejected.get(reason, 0) + 1
    record = {
        "model": spec_model.name, "system": spec_system.name, "chip": hardware.chip.name,
        "objective": request.objective, "demand_output_tokens_per_s": request.demand_output_tokens_per_s,
        "slo": slo.model_dump(), "input_tokens": request.input_tokens, "output_tokens": request.output_tokens,
        "speculation": speculation.model_dump() if speculation is not None else None,
        "prefix_cache_hit": prefix_cache_hit, "stack": request.stack,
        "candidates": len(result.candidates), "simulated": result.simulated, "rejected": rejected,
        "best": result.ranked[0].record(request.output_tokens),
        "ranked": [c.record(request.output_tokens) for c in result.ranked],
    }
    record.update(serving_bands(hardware, record, CAPACITY_TIMES, CAPACITY_RATES).record())
    best: dict[str, Any] = result.ranked[0].record(request.output_tokens)
    return CapacityAnswer(record=record, model=record["model"], system=record["system"], chip=record["chip"],
                          objective=request.objective, candidates=record["candidates"],
                          simulated=record["simulated"], best_chips=best.get("chips"),
                          best_usd_per_million_tokens=best.get("usd_per_million_output_tokens"))
