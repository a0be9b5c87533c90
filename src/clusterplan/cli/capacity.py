"""`clusterplan capacity`: serving deployments searched for a demand at an SLO."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

import clusterplan.cli._common as _common
from clusterplan.api._edge import MAX_SIMULATED_REQUESTS
from clusterplan.cli._common import (
    clean_errors,
    emit_json,
)


# ---- capacity ------------------------------------------------------------------------------
@clean_errors
def capacity(
    model: Annotated[str, typer.Option(help="catalog model name or path to a model YAML")],
    system: Annotated[str, typer.Option(help="catalog system name or path to a system YAML")],
    demand: Annotated[str, typer.Option(help="output tokens/s to serve, e.g. 5e6tok/s or 5M")],
    slo_ttft: Annotated[str, typer.Option(help="p99 time-to-first-token target, e.g. 2s (bare number: ms)")],
    slo_tpot: Annotated[str, typer.Option(help="p99 time-per-output-token target, e.g. 100ms (bare: ms)")],
    input_tokens: Annotated[int, typer.Option(help="prompt tokens per request (mean)")] = 1000,
    output_tokens: Annotated[int, typer.Option(help="generated tokens per request (mean)")] = 200,
    objective: Annotated[str, typer.Option(help="cost ($/M tokens) | chips | power (facility MW)")] = "cost",
    weights: Annotated[str | None, typer.Option(
        help="weight formats to consider, e.g. bf16,fp8 (fp4 too) (default: bf16,fp8 where the chip has them)")
    ] = None,
    kv_cache: Annotated[str, typer.Option(help="KV-cache formats to consider")] = "bf16,fp8",
    max_chips_per_replica: Annotated[int, typer.Option(help="largest replica (attention DP x TP x PP chips)")] = 64,
    max_batch: Annotated[int | None, typer.Option(
        help="engine limit on batched sequences (default: 2048, or the --stack's)")] = None,
    top: Annotated[int, typer.Option(help="how many deployments to list")] = 5,
    requests: Annotated[int, typer.Option(
        help=f"requests per simulation (at most {MAX_SIMULATED_REQUESTS:,} / --top)")] = 1000,
    length_spread: Annotated[float, typer.Option(help="CV of lognormal request lengths (0 = fixed)")] = 0.0,
    seed: Annotated[int, typer.Option(help="random seed of the simulated workload")] = 0,
    chip: Annotated[str | None, typer.Option(help="override the system's chip (name or YAML)")] = None,
    speculative: Annotated[str | None, typer.Option(
        help="speculative decoding on every candidate: draft=MODEL|mtp|eagle,tokens=K,acceptance=A")] = None,
    prefix_cache_hit: Annotated[float, typer.Option(
        help="fraction of each prompt found in the prefix cache, 0 <= F < 1")] = 0.0,
    stack: Annotated[str | None, typer.Option(
        help="serving engine of every candidate, its documented defaults: trtllm | vllm | sglang | neuron")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Search serving deployments (TP, PP, EP, weight and KV formats) for a demand at a p99
    TTFT/TPOT SLO: the best by cost, chips or power, with replicas, chips, MW and $ per M tokens."""
    from rich.progress import Progress

    from clusterplan.api.capacity import CapacityRequest
    from clusterplan.api.capacity import answer as capacity_answer
    from clusterplan.report.tables import capacity_table

    request = CapacityRequest(
        model=model, system=system, demand_output_tokens_per_s=demand, slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot,
        input_tokens=input_tokens, output_tokens=output_tokens, objective=objective, weights=weights,
        kv_cache=kv_cache, max_chips_per_replica=max_chips_per_replica, max_batch=max_batch, top=top,
        requests=requests, length_spread=length_spread, seed=seed, chip=chip, speculative=speculative,
        prefix_cache_hit=prefix_cache_hit, stack=stack)
    # The bar starts with the first simulation: a refusal before it prints nothing but its line.
    bar = Progress(console=Console(stderr=True), transient=True, disable=as_json)
    task = bar.add_task("simulating deployments at the SLO", total=None)
    started = False

    def advance(done: int, total: int) -> None:
        nonlocal started
        if not started:
            bar.start()
            started = True
        bar.update(task, completed=done, total=total)

    try:
        record = capacity_answer(request, progress=advance).record
    finally:
        if started:
            bar.stop()
    if as_json:
        emit_json(record)
    else:
        capacity_table(_common.console, record)
