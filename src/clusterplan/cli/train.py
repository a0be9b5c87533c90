"""`clusterplan train`: one training step estimated (time, breakdown, memory)."""

from __future__ import annotations

from typing import Annotated

import typer

import clusterplan.cli._common as _common
from clusterplan.api._edge import does_not_fit
from clusterplan.cli._common import (
    AttentionKernelOption,
    CapacityFactorOption,
    CpOption,
    DpOption,
    DpShardOption,
    EpDedupOption,
    EpOption,
    EpWithinScaleUpOption,
    EtpOption,
    FirstStageLayersOption,
    FlashAttentionOption,
    Fp8ParamsOption,
    FusedCrossEntropyOption,
    GlobalBatchOption,
    GradReduceOption,
    LastStageLayersOption,
    LossChunksOption,
    MicroBatchOption,
    MtpOption,
    OffloadLayersOption,
    OffloadModulesOption,
    OffloadQkvOption,
    OptimizerMomentsOption,
    OverlapDpOption,
    OverlapEpOption,
    OverlapPpOption,
    OverlapTpOption,
    PlanFileOption,
    PpOption,
    PrecisionOption,
    RecomputeModulesOption,
    RecomputeOption,
    RoutingGiniOption,
    SeqOption,
    SpOption,
    TpOption,
    VpOption,
    ZeroOption,
    clean_errors,
    emit_json,
    given_plan_options,
    merged_options,
    plan_options,
)
from clusterplan.errors import NoAnswerError


# ---- train ---------------------------------------------------------------------------------
@clean_errors
def train(
    model: Annotated[str, typer.Option(help="catalog model name or path to a model YAML")],
    system: Annotated[str, typer.Option(help="catalog system name or path to a system YAML")],
    chips: Annotated[int, typer.Option(help="chips in the job")],
    seq: SeqOption = None,
    global_batch: GlobalBatchOption = None,
    plan_file: PlanFileOption = None,
    tp: TpOption = None,
    pp: PpOption = None,
    vp: VpOption = None,
    cp: CpOption = None,
    dp: DpOption = None,
    ep: EpOption = None,
    etp: EtpOption = None,
    capacity_factor: CapacityFactorOption = None,
    routing_gini: RoutingGiniOption = None,
    overlap_ep: OverlapEpOption = None,
    ep_dedup: EpDedupOption = None,
    mtp: MtpOption = None,
    ep_within_scale_up: EpWithinScaleUpOption = None,
    micro_batch: MicroBatchOption = None,
    recompute: RecomputeOption = None,
    recompute_modules: RecomputeModulesOption = None,
    sp: SpOption = None,
    zero: ZeroOption = None,
    dp_shard: DpShardOption = None,
    precision: PrecisionOption = None,
    grad_reduce: GradReduceOption = None,
    optimizer_moments: OptimizerMomentsOption = None,
    overlap_tp: OverlapTpOption = None,
    overlap_dp: OverlapDpOption = None,
    overlap_pp: OverlapPpOption = None,
    flash_attention: FlashAttentionOption = None,
    attention_kernel: AttentionKernelOption = None,
    fp8_params: Fp8ParamsOption = None,
    offload_layers: OffloadLayersOption = None,
    offload_modules: OffloadModulesOption = None,
    offload_qkv: OffloadQkvOption = None,
    fused_cross_entropy: FusedCrossEntropyOption = None,
    loss_chunks: LossChunksOption = None,
    first_stage_layers: FirstStageLayersOption = None,
    last_stage_layers: LastStageLayersOption = None,
    tokens: Annotated[str | None, typer.Option(help="training tokens, e.g. 15T, for time to train")] = None,
    chip: Annotated[str | None, typer.Option(help="override the system's chip (name or YAML)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Estimate one training step (time, breakdown, memory) and the time to train. Settings
    left open are listed with what changing them would do (JSON: assumed)."""
    from clusterplan.api.train import TrainRequest
    from clusterplan.api.train import answer as train_answer
    from clusterplan.report.tables import memory_table, train_table

    options, origins = merged_options(plan_file, given_plan_options(locals()))
    request = TrainRequest(model=model, system=system, chips=chips, plan=plan_options(options, origins),
                           tokens=tokens, chip=chip, origins=origins)
    record = train_answer(request).record
    if not record["fits_memory"]:
        # A valid question answered no: the figures are those of a plan that cannot run.
        if as_json:
            emit_json(record)
        else:
            memory_table(_common.console, record)
        raise NoAnswerError("--chips", chips, does_not_fit(record))
    if as_json:
        emit_json(record)
    else:
        train_table(_common.console, record)
