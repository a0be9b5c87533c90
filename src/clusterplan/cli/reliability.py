"""`clusterplan reliability`: failures, checkpoints and goodput of a training job."""

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
from clusterplan.errors import NoAnswerError, SpecError


# ---- reliability ---------------------------------------------------------------------------
@clean_errors
def reliability(
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
    tokens: Annotated[str | None, typer.Option(help="training tokens, e.g. 15T")] = None,
    duration: Annotated[str | None, typer.Option(help="a period instead of a token budget, e.g. 54d")] = None,
    checkpoint_interval: Annotated[str, typer.Option(
        help="auto (the optimum, never below what a checkpoint needs) or a duration, e.g. 30min")] = "auto",
    checkpoint: Annotated[str, typer.Option(
        help="sync (blocking write) | async (copy to host, write in the background) | memory "
             "(copies in peers' host memory, persisted every --persist-interval)")] = "sync",
    recovery: Annotated[str, typer.Option(
        help="spares (hot spares swap in) | wait (for a repair) | elastic (= wait --elastic)")] = "spares",
    elastic: Annotated[bool, typer.Option(
        "--elastic/--no-elastic", help="the other replicas go on while a failed node is replaced")] = False,
    fold: Annotated[bool, typer.Option(
        "--fold/--no-fold", help="failures during an outage fold into it (--no-fold: each adds its own)")] = True,
    restart: Annotated[str | None, typer.Option(help="override the restart time, e.g. 30s")] = None,
    detection: Annotated[str | None, typer.Option(help="override the detection time, e.g. 10s")] = None,
    swap: Annotated[str | None, typer.Option(help="override a hot spare's swap-in time, e.g. 1min")] = None,
    elastic_pause: Annotated[str | None, typer.Option(help="override the elastic regroup pause, e.g. 10s")] = None,
    persist_interval: Annotated[str | None, typer.Option(
        help="memory checkpoints: persist to storage this often, e.g. 1h")] = None,
    failure_scale: Annotated[float, typer.Option(help="multiply every failure rate")] = 1.0,
    storage_bandwidth: Annotated[str | None, typer.Option(help="checkpoint storage, e.g. 2TB/s")] = None,
    trials: Annotated[int, typer.Option(help="Monte Carlo trials (0 = closed form only)")] = 0,
    seed: Annotated[int, typer.Option(help="Monte Carlo seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Failures, checkpoints and goodput of a training job (closed form, optional Monte Carlo).
    The plan takes every train option (--seq 8192 and --global-batch 2048 unless given)."""
    from clusterplan.api.reliability import ReliabilityRequest
    from clusterplan.api.reliability import answer as reliability_answer
    from clusterplan.report.tables import memory_table, reliability_table

    if (tokens is None) == (duration is None):
        raise SpecError("--tokens", tokens, "give exactly one of --tokens or --duration")
    options, origins = merged_options(plan_file, given_plan_options(locals()))
    request = ReliabilityRequest(
        model=model, system=system, chips=chips, plan=plan_options(options, origins), tokens=tokens,
        duration_s=duration, checkpoint_interval_s=checkpoint_interval, checkpoint=checkpoint, recovery=recovery,
        elastic=elastic, fold=fold, restart_s=restart, detection_s=detection, swap_s=swap,
        elastic_pause_s=elastic_pause, persist_interval_s=persist_interval, failure_scale=failure_scale,
        storage_bandwidth_bytes_per_s=storage_bandwidth, trials=trials, seed=seed, origins=origins)
    answered = reliability_answer(request, tokens)
    if answered.memory_record is not None:  # the failures of a job that cannot run: answered no
        if as_json:
            emit_json(answered.memory_record)
        else:
            memory_table(_common.console, answered.memory_record)
        raise NoAnswerError("--chips", chips, does_not_fit(answered.memory_record))
    record = answered.record
    if as_json:
        emit_json(record)
    else:
        reliability_table(_common.console, record)
