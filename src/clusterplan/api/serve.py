"""How fast does one serving replica answer, and what does a demand take? (``clusterplan serve``)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from clusterplan.api._base import Answer, Request, demand_field, latency_field
from clusterplan.api._edge import (
    MAX_SIMULATED_REQUESTS,
    flag,
    parse_buckets,
    serve_simulation,
    spec_or_refuse,
)
from clusterplan.catalog import hardware_for, load_chip, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.specs.plan import MAX_CHIPS


class ServeRequest(Request):
    """One replica's deployment (the Deployment fields given; ``tp`` from ``chips_per_replica``
    when not given, chips = attention_dp x tp x pp), a request mix, and optionally a simulated
    load, an SLO and a demand."""

    model: str
    system: str
    tp: int | None = None
    pp: int | None = None
    ep: int | None = None
    attention_dp: int | None = None
    chips_per_replica: int | None = None
    weights: str | None = None
    kv_cache: str | None = None
    max_batch: int | None = None
    kv_memory_fraction: float | None = None
    frontend: str | None = None
    attention_kernel: str | None = None
    stack: str | None = None
    routing_gini: float | None = None
    prefill_buckets: tuple[int, ...] | None = None
    decode_buckets: tuple[int, ...] | None = None
    input_tokens: int = 1000
    output_tokens: int = 200
    rate_per_s: float | None = Field(None, description="simulate one replica at this many requests/s")
    trace: Path | None = Field(None, description="a trace file to replay (CLI only: the web takes no paths)")
    batch: int | None = None
    offline: bool = False
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    demand_output_tokens_per_s: float | None = None
    requests: int = 2000
    length_spread: float = 0.0
    seed: int = 0
    chip: str | None = None
    scheduler: str = "chunked"
    admission: str | None = Field(
        None, description="reserve | optimistic; None: the stack's (inference/stacks.py ADMISSION), else reserve")
    max_num_tokens: int | None = Field(
        None, description="engine's per-step token budget (chunked: decodes count one each; continuous and "
        "disaggregated: prompt tokens of one prefill step); None: the simulator's 8192")
    replicas: int = 1
    router: str = "round-robin"
    prefill_replicas: int | None = None
    decode_replicas: int | None = None
    speculative: str | None = Field(
        None, description="speculative decoding: draft=MODEL|mtp|eagle,tokens=K,acceptance=A")
    prefix_cache_hit: float = Field(0.0, description="fraction of each prompt found in the prefix cache, 0 <= F < 1")
    #: The Deployment fields of a ``--deployment`` file (overridden by those given above) and
    #: where each came from.
    deployment_file: dict[str, Any] = Field(default_factory=dict)
    origins: dict[str, str] = Field(default_factory=dict)

    @field_validator("prefill_buckets", "decode_buckets", mode="before")
    @classmethod
    def buckets(cls, value: Any, info: Any) -> Any:
        option = "--prefill-buckets" if info.field_name == "prefill_buckets" else "--decode-buckets"
        return parse_buckets(value, option) if isinstance(value, str) else value

    @field_validator("demand_output_tokens_per_s", mode="before")
    @classmethod
    def demand(cls, value: Any) -> Any:
        return demand_field(value)

    @field_validator("slo_ttft_s", "slo_tpot_s", mode="before")
    @classmethod
    def latency(cls, value: Any, info: Any) -> Any:
        return latency_field(value, info.field_name)


class ServeAnswer(Answer):
    """One replica's figures (``record``: the ``serve --json`` object)."""

    model: str
    system: str
    chip: str
    chips_per_replica: int
    kv_capacity_tokens: float
    operating_requests_per_s: float | None = None


def answer(request: ServeRequest) -> ServeAnswer:
    """Latency and throughput of one replica; the rate it sustains at the SLO; the replicas,
    MW and $ per million tokens of the demand; simulated runs when a load is given."""
    from clusterplan.inference.capacity import Slo, serve_record
    from clusterplan.inference.stacks import ADMISSION, STACKS
    from clusterplan.inference.step import Deployment
    from clusterplan.inference.workload import closed_loop, from_trace
    from clusterplan.inference.workload import offline as queued_at_zero
    from clusterplan.specs.plan import ATTENTION_KERNEL_CODES

    spec_model = load_model(request.model, "--model")
    spec_system = load_system(request.system, "--system")
    spec_chip = load_chip(request.chip, "--chip") if request.chip else None
    given = {name: getattr(request, name) for name in (
        "tp", "pp", "ep", "attention_dp", "weights", "kv_cache", "max_batch", "kv_memory_fraction", "frontend",
        "attention_kernel", "stack", "routing_gini", "prefill_buckets", "decode_buckets")
        if getattr(request, name) is not None}
    options = {**request.deployment_file, **given}
    origins = {key: value for key, value in request.origins.items() if key not in given}
    for name, allowed in (("weights", ("bf16", "fp8", "fp4")), ("kv_cache", ("bf16", "fp8")),
                          ("frontend", ("server", "engine")), ("stack", STACKS),
                          ("attention_kernel", tuple(ATTENTION_KERNEL_CODES))):
        if name in options and options[name] not in allowed:
            raise SpecError(origins.get(name, flag(name)), options[name], f"must be one of {', '.join(allowed)}")
    for name in ("tp", "pp", "ep", "attention_dp", "max_batch"):
        value = options.get(name)
        if isinstance(value, int) and value < 1:
            raise SpecError(origins.get(name, flag(name)), value, "must be >= 1")
    draft = spec_or_refuse(Deployment, {**options, "tp": options.get("tp", 1)}, origins)
    pp = draft.pp * draft.attention_dp  # chips of a replica per TP degree
    chips_per_replica = request.chips_per_replica
    if chips_per_replica is not None and chips_per_replica < 1:
        raise SpecError("--chips-per-replica", chips_per_replica, "must be >= 1")
    if "tp" not in options:
        if chips_per_replica is not None and chips_per_replica % pp != 0:
            raise SpecError("--chips-per-replica", chips_per_replica,
                            f"must be a multiple of --pp x --attention-dp = {pp}")
        options["tp"] = chips_per_replica // pp if chips_per_replica is not None else 1
    elif chips_per_replica is not None and chips_per_replica != draft.tp * pp:
        raise SpecError("--chips-per-replica", chips_per_replica,
                        f"must equal --attention-dp x --tp x --pp = {draft.tp * pp}")
    for name, count in (("--input-tokens", request.input_tokens), ("--output-tokens", request.output_tokens),
                        ("--requests", request.requests)):
        if count < 1:
            raise SpecError(name, count, "must be >= 1")
    if request.requests > MAX_SIMULATED_REQUESTS:
        raise SpecError("--requests", request.requests,
                        f"must be <= {MAX_SIMULATED_REQUESTS:,} (bounded simulation time)")
    deployment = spec_or_refuse(Deployment, options, origins)
    hardware = hardware_for(spec_system, spec_chip)
    hardware.chip.require(deployment.weights, origins.get("weights", "--weights"))
    if deployment.chips > MAX_CHIPS:
        raise SpecError("--tp", deployment.tp, f"attention_dp*tp*pp must be <= {MAX_CHIPS:,} (absurd size)")
    if not 0.0 <= request.length_spread <= 3.0:
        raise SpecError("--length-spread", request.length_spread, "must be a coefficient of variation in [0, 3]")
    ttft_s, tpot_s = request.slo_ttft_s, request.slo_tpot_s
    if (ttft_s is None) != (tpot_s is None):
        raise SpecError("--slo-ttft" if ttft_s is None else "--slo-tpot", None,
                        "give both --slo-ttft and --slo-tpot (p99 targets, e.g. 2s and 100ms)")
    slo = Slo(ttft_p99_s=ttft_s, tpot_p99_s=tpot_s) if ttft_s is not None and tpot_s is not None else None
    # the stack's documented admission where none is given (validated against STACKS above)
    stack = str(options.get("stack", ""))
    admission = request.admission if request.admission is not None else ADMISSION.get(stack, "reserve")
    simulation = serve_simulation(request.scheduler, admission, request.replicas, request.router,
                                  request.prefill_replicas, request.decode_replicas, request.max_num_tokens)
    rate, trace, batch = request.rate_per_s, request.trace, request.batch
    if sum(x is not None and x is not False for x in (rate, trace, batch, request.offline or None)) > 1:
        raise SpecError("--rate", rate, "give at most one of --rate, --trace, --batch, --offline")
    if batch is not None and batch < 1:
        raise SpecError("--batch", batch, "must be >= 1 concurrent requests")
    replay = from_trace(trace) if trace is not None else None
    if replay is not None and replay.arrival_s.size > MAX_SIMULATED_REQUESTS:
        raise SpecError("--trace", str(trace), f"holds {replay.arrival_s.size:,} requests, more than the "
                        f"{MAX_SIMULATED_REQUESTS:,} a simulation may replay; cut it")
    if batch is not None:
        replay = closed_loop(batch, request.requests, request.input_tokens, request.output_tokens)
    elif request.offline:
        replay = queued_at_zero(request.requests, request.input_tokens, request.output_tokens)
    from clusterplan.inference.acceleration import check_prefix_cache_hit, parse_speculation

    spec_option = request.origins.get("speculative", "--speculative")
    speculation = (parse_speculation(str(request.speculative), spec_option)
                   if request.speculative is not None else None)
    draft_model = (load_model(speculation.draft, spec_option)
                   if speculation is not None and speculation.draft is not None else None)
    prefix_cache_hit = check_prefix_cache_hit(request.prefix_cache_hit,
                                              request.origins.get("prefix_cache_hit", "--prefix-cache-hit"))
    try:
        record = serve_record(spec_model, hardware, deployment, request.input_tokens, request.output_tokens,
                              rate_per_s=rate, slo=slo, demand_output_tokens_per_s=request.demand_output_tokens_per_s,
                              requests=request.requests, length_spread=request.length_spread, seed=request.seed,
                              replay=replay, simulation=simulation, speculation=speculation,
                              draft_model=draft_model, prefix_cache_hit=prefix_cache_hit)
    except ValidationError as error:
        first = error.errors()[0]
        raise SpecError(flag(str(first["loc"][0])), first.get("input"), str(first["msg"])) from None
    except SpecError as error:
        raise error.renamed(origins.get(error.field, flag(error.field))) from None
    return ServeAnswer(record=record, model=record["model"], system=record["system"], chip=record["chip"],
                       chips_per_replica=record["chips_per_replica"],
                       kv_capacity_tokens=record["kv_capacity_tokens"],
                       operating_requests_per_s=record.get("operating_requests_per_s"))
