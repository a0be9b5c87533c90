"""`clusterplan serve`: one replica's latency and throughput, the rate at an SLO, a demand's cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

import clusterplan.cli._common as _common
from clusterplan.api._edge import MAX_SIMULATED_REQUESTS
from clusterplan.cli._common import (
    clean_errors,
    emit_json,
    spec_file,
)

#: keys a ``--deployment`` file may hold beside the Deployment fields
SERVING_KEYS = ("speculative", "prefix_cache_hit")


def speculation_text(value: Any) -> str:
    """A file's ``speculative:`` as the option's text: a ``draft=..,tokens=..,acceptance=..``
    string as it is, a mapping of those keys joined into one (checked by the parser)."""
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in value.items())
    return str(value)


# ---- serve ---------------------------------------------------------------------------------
@clean_errors
def serve(
    model: Annotated[str, typer.Option(help="catalog model name or path to a model YAML")],
    system: Annotated[str, typer.Option(help="catalog system name or path to a system YAML")],
    deployment_file: Annotated[Path | None, typer.Option(
        "--deployment", metavar="FILE.yaml",
        help="Deployment fields in YAML (tp, pp, ep, attention_dp, weights, kv_cache, max_batch, kv_memory_fraction, "
        "frontend, buckets, stack, routing_gini) and speculative, prefix_cache_hit; options given on the line "
        "override them")
    ] = None,
    tp: Annotated[int | None, typer.Option(help="tensor parallelism of one replica (default: 1)")] = None,
    pp: Annotated[int | None, typer.Option(help="pipeline parallelism of one replica (default: 1)")] = None,
    chips_per_replica: Annotated[
        int | None, typer.Option(help="chips per replica (= TP x PP; alone it sets TP, PP 1)")
    ] = None,
    ep: Annotated[int | None, typer.Option(help="expert parallelism (MoE models) (default: 1)")] = None,
    attention_dp: Annotated[int | None, typer.Option(
        help="MoE: attention data-parallel ranks of --tp chips each; chips = this x TP x PP (default: 1)")] = None,
    weights: Annotated[str | None, typer.Option(help="bf16 | fp8 | fp4 weights and matmuls (default: bf16)")] = None,
    kv_cache: Annotated[str | None, typer.Option(help="bf16 | fp8 KV cache (default: bf16)")] = None,
    max_batch: Annotated[int | None, typer.Option(help="engine limit on batched sequences (default: 2048)")] = None,
    kv_memory_fraction: Annotated[float | None, typer.Option(
        help="share of the HBM left after weights and runtime the KV cache may take (default: 0.9)")] = None,
    prefill_buckets: Annotated[str | None, typer.Option(
        help="static-shape engine (AWS Neuron): compiled prompt lengths, e.g. 2048,4096,8192")] = None,
    decode_buckets: Annotated[str | None, typer.Option(
        help="static-shape engine: compiled sequence lengths of token generation, e.g. 4096,8192")] = None,
    frontend: Annotated[str | None, typer.Option(
        help="server: latency behind an API server (fitted request latency added to TTFT); engine: "
             "engine-only benchmark, none added (default: server)")] = None,
    attention_kernel: Annotated[str | None, typer.Option(
        help="prefill's fused-attention library: flash1 | flash2 | cudnn | flash3 | auto (the chip family's "
             "reference: cudnn, flash2 on Ampere; --stack trtllm: flash3 on Hopper)")] = None,
    stack: Annotated[str | None, typer.Option(
        help="serving engine whose documented defaults fill the options not given: trtllm | vllm | sglang | "
             "neuron (default: none, the defaults above)")] = None,
    routing_gini: Annotated[float | None, typer.Option(
        help="MoE with --ep > 1: Gini of the per-expert token load, 0 <= G < 1 (0 = uniform routing; "
             "default 0.2, trained checkpoints on real text)")] = None,
    input_tokens: Annotated[int, typer.Option(help="prompt tokens per request (mean)")] = 1000,
    output_tokens: Annotated[int, typer.Option(help="generated tokens per request (mean)")] = 200,
    rate: Annotated[float | None, typer.Option(help="simulate one replica at this many requests/s")] = None,
    trace: Annotated[
        Path | None, typer.Option("--trace", "--workload",
                                  help="replay a trace (CSV or JSON Lines: timestamp,input_tokens,output_tokens)")
    ] = None,
    batch: Annotated[int | None, typer.Option(help="simulate a closed loop of this many concurrent requests")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="simulate every request queued at t = 0")] = False,
    slo_ttft: Annotated[str | None, typer.Option(help="p99 time-to-first-token target, e.g. 2s (bare: ms)")] = None,
    slo_tpot: Annotated[str | None, typer.Option(help="p99 time-per-output-token target, e.g. 100ms")] = None,
    demand: Annotated[str | None, typer.Option(help="output tokens/s to serve, e.g. 2M: replicas, MW, $")] = None,
    requests: Annotated[int, typer.Option(
        help=f"requests per simulation (at most {MAX_SIMULATED_REQUESTS:,})")] = 2000,
    length_spread: Annotated[float, typer.Option(help="CV of lognormal request lengths (0 = fixed)")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed of the simulated workload")] = 0,
    chip: Annotated[str | None, typer.Option(help="override the system's chip (name or YAML)")] = None,
    scheduler: Annotated[
        str, typer.Option(help="chunked (continuous batching + chunked prefill) | continuous | static | disaggregated")
    ] = "chunked",
    admission: Annotated[str | None, typer.Option(
        help="reserve (whole output at admission) | optimistic (preempts); default: the --stack's "
             "(trtllm, neuron: reserve; vllm, sglang: optimistic), else reserve")] = None,
    max_num_tokens: Annotated[int | None, typer.Option(
        help="engine's per-step token budget (vLLM max_num_batched_tokens, TensorRT-LLM max_num_tokens): "
             "chunked: decodes count one each, prompts fill the rest; continuous, disaggregated: prompt "
             "tokens of one prefill step (default 8192)")] = None,
    replicas: Annotated[int, typer.Option(help="replicas behind a router in the simulated runs")] = 1,
    router: Annotated[str, typer.Option(help="round-robin | least-loaded")] = "round-robin",
    prefill_replicas: Annotated[int | None, typer.Option(help="prefill replicas (--scheduler disaggregated)")] = None,
    decode_replicas: Annotated[int | None, typer.Option(help="decode replicas (--scheduler disaggregated)")] = None,
    speculative: Annotated[str | None, typer.Option(
        help="speculative decoding: draft=MODEL|mtp|eagle,tokens=K,acceptance=A")] = None,
    prefix_cache_hit: Annotated[float | None, typer.Option(
        help="fraction of each prompt found in the prefix cache, 0 <= F < 1 (default: 0)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Serve a model: one replica's latency and throughput, the request rate it sustains at a
    p99 TTFT/TPOT SLO, and the chips, MW and $ per million tokens a demand needs. Simulated runs
    use --scheduler, --admission and a fleet of --replicas behind --router (or, disaggregated,
    --prefill-replicas and --decode-replicas)."""
    from clusterplan.api.serve import ServeRequest
    from clusterplan.api.serve import answer as serve_answer
    from clusterplan.inference.step import Deployment
    from clusterplan.report.tables import serve_table

    from_file, origins = spec_file(deployment_file, Deployment, "--deployment", extra=SERVING_KEYS)
    # speculative decoding and prefix caching are serving settings, not layout: a file may hold
    # them beside the Deployment fields; the options given on the line override them
    if speculative is None and "speculative" in from_file:
        speculative = speculation_text(from_file["speculative"])
    else:
        origins.pop("speculative", None)
    if prefix_cache_hit is None and "prefix_cache_hit" in from_file:
        from clusterplan.inference.acceleration import check_prefix_cache_hit

        prefix_cache_hit = check_prefix_cache_hit(from_file["prefix_cache_hit"], origins["prefix_cache_hit"])
    else:
        origins.pop("prefix_cache_hit", None)
    from_file = {key: value for key, value in from_file.items() if key not in SERVING_KEYS}
    request = ServeRequest(
        model=model, system=system, tp=tp, pp=pp, ep=ep, attention_dp=attention_dp,
        chips_per_replica=chips_per_replica, weights=weights,
        kv_cache=kv_cache, max_batch=max_batch, kv_memory_fraction=kv_memory_fraction, frontend=frontend, stack=stack,
        routing_gini=routing_gini,
        attention_kernel=attention_kernel,
        prefill_buckets=prefill_buckets, decode_buckets=decode_buckets, input_tokens=input_tokens,
        output_tokens=output_tokens, rate_per_s=rate, trace=trace, batch=batch, offline=offline,
        slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot, demand_output_tokens_per_s=demand, requests=requests,
        length_spread=length_spread, seed=seed, chip=chip, scheduler=scheduler, admission=admission,
        max_num_tokens=max_num_tokens, replicas=replicas, router=router, prefill_replicas=prefill_replicas,
        decode_replicas=decode_replicas,
        speculative=speculative, prefix_cache_hit=0.0 if prefix_cache_hit is None else prefix_cache_hit,
        deployment_file=from_file, origins=origins)
    record = serve_answer(request).record
    if as_json:
        emit_json(record)
    else:
        serve_table(_common.console, record)
