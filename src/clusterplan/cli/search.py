"""`clusterplan search`: every valid plan, ranked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import clusterplan.cli._common as _common
from clusterplan.api._edge import SEARCH_AXES
from clusterplan.cli._common import (
    AttentionKernelOption,
    CapacityFactorOption,
    EpDedupOption,
    FlashAttentionOption,
    Fp8ParamsOption,
    FusedCrossEntropyOption,
    GlobalBatchOption,
    GradReduceOption,
    LossChunksOption,
    MtpOption,
    OffloadLayersOption,
    OffloadModulesOption,
    OffloadQkvOption,
    OptimizerMomentsOption,
    OverlapDpOption,
    OverlapEpOption,
    OverlapPpOption,
    OverlapTpOption,
    RecomputeModulesOption,
    RoutingGiniOption,
    SeqOption,
    clean_errors,
    emit_json,
    given_plan_options,
    merged_options,
    plan_options,
)


# ---- search --------------------------------------------------------------------------------
@clean_errors
def search(
    model: Annotated[str, typer.Option(help="catalog model name or path to a model YAML")],
    system: Annotated[str, typer.Option(help="catalog system name or path to a system YAML")],
    chips: Annotated[int | None, typer.Option(
        help="chips in the job (or the most it may use, with --up-to); or give --max-chips")] = None,
    seq: SeqOption = None,
    global_batch: GlobalBatchOption = None,
    deadline: Annotated[str | None, typer.Option(
        help="train --tokens within this time, e.g. 90d (units h, d, w, y)")] = None,
    budget: Annotated[str | None, typer.Option(
        help="the run costs at most this many US dollars, e.g. 50M (k, M, B)")] = None,
    max_chips: Annotated[int | None, typer.Option(
        help="use at most this many chips (any count up to it without --chips)")] = None,
    any_shape: Annotated[bool, typer.Option(
        "--any-shape", help="any chip count and TP (default: whole scale-up domains, TP dividing "
        "one)")] = False,
    plan_file: Annotated[Path | None, typer.Option(
        "--plan", metavar="FILE.yaml",
        help="Plan fields every plan shares (flash_attention, overlaps, grad_reduce, ...) and single "
        "precision/recompute/zero values; options given override them")] = None,
    precision: Annotated[str | None, typer.Option(
        help="matmul precisions to consider, e.g. bf16,fp8 (default: bf16)")] = None,
    recompute: Annotated[str | None, typer.Option(
        help="recompute levels to consider (default: none,selective,full)")] = None,
    zero: Annotated[str | None, typer.Option(help="ZeRO stages to consider (default: 0,1,2,3)")] = None,
    objective: Annotated[str, typer.Option(help="time | cost (chip-hours) | energy (chip-hours x TDP)")] = "time",
    max_memory_fraction: Annotated[float, typer.Option(help="usable fraction of HBM")] = 0.9,
    top: Annotated[int, typer.Option(help="how many plans to list")] = 10,
    up_to: Annotated[bool, typer.Option("--up-to/--exact", help="use at most --chips (any count) or exactly")] = False,
    flash_attention: FlashAttentionOption = None,
    attention_kernel: AttentionKernelOption = None,
    fp8_params: Fp8ParamsOption = None,
    offload_layers: OffloadLayersOption = None,
    offload_modules: OffloadModulesOption = None,
    offload_qkv: OffloadQkvOption = None,
    fused_cross_entropy: FusedCrossEntropyOption = None,
    loss_chunks: LossChunksOption = None,
    overlap_tp: OverlapTpOption = None,
    overlap_dp: OverlapDpOption = None,
    overlap_pp: OverlapPpOption = None,
    grad_reduce: GradReduceOption = None,
    optimizer_moments: OptimizerMomentsOption = None,
    recompute_modules: RecomputeModulesOption = None,
    routing_gini: RoutingGiniOption = None,
    capacity_factor: CapacityFactorOption = None,
    overlap_ep: OverlapEpOption = None,
    ep_dedup: EpDedupOption = None,
    mtp: MtpOption = None,
    max_tp: Annotated[int, typer.Option(help="largest TP degree to consider")] = 64,
    max_cp: Annotated[int, typer.Option(help="largest CP degree to consider")] = 32,
    max_micro_batch: Annotated[int, typer.Option(help="largest micro-batch to consider")] = 16,
    tokens: Annotated[str | None, typer.Option(help="training tokens, e.g. 15T, for time to train")] = None,
    chip: Annotated[str | None, typer.Option(help="override the system's chip (name or YAML)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Search every valid plan; print the best ones, ranked, with why the others lose, and the
    train command that reruns the first. With --deadline, --budget or --max-chips only plans
    meeting them are ranked (exit 1 with the reason when none does)."""
    from clusterplan.api.search import SearchRequest
    from clusterplan.api.search import answer as search_answer
    from clusterplan.report.tables import search_table

    given = given_plan_options(locals())
    axes = {name: given.pop(name) for name in SEARCH_AXES if name in given}  # comma-separated lists
    options, origins = merged_options(plan_file, given)
    request = SearchRequest(
        model=model, system=system, chips=chips, plan=plan_options(options, origins), deadline=deadline,
        budget=budget, max_chips=max_chips, any_shape=any_shape, objective=objective,
        max_memory_fraction=max_memory_fraction, top=top, up_to=up_to, max_tp=max_tp, max_cp=max_cp,
        max_micro_batch=max_micro_batch, tokens=tokens, chip=chip, origins=origins, **axes)
    result = search_answer(request)
    if result.unmet:  # plans fit, none meets the constraints: a finding, not bad input
        if as_json:
            emit_json(result.record)
        typer.echo(result.unmet, err=True)
        raise typer.Exit(code=1)
    if as_json:
        emit_json(result.record)
    else:
        search_table(_common.console, result.result)
