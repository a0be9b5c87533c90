"""Memory per chip: weights, gradients, optimizer state, activations, buffers.

Model state follows Megatron-LM's theoretical memory model (``theoretical_memory_usage.py``,
Korthikanti et al. 2022): bf16 weights (2 B/param), a gradient buffer and Adam with fp32 master
weights and two moments (12 B; 8 B with bf16 moments, ``Plan.optimizer_moments``), sharded by
the distributed optimizer (ZeRO-1) over the ``d = dp*cp`` replicas (or the ``dp_shard`` subgroup
with hybrid sharding); ZeRO-2 also shards gradients, ZeRO-3 (FSDP) shards weights too. The
gradient buffer has the reduction dtype: Megatron-Core's DDP allocates it in fp32 only with
``grad_reduce_in_fp32`` and otherwise in the parameter dtype (``distributed_data_parallel.py``:
``torch.float if grad_reduce_in_fp32 else param.dtype``), so 4 B or 2 B per parameter. fp8/fp4
plans keep an extra low-precision weight copy (1 B) beside the bf16 weights, or, with fp8
parameters (``--fp8-param-gather``), only the fp8 weights and their transposed (columnwise) copy
(2 B).

Activations follow Korthikanti et al. 2022 (Table 2), generalised to GQA, gated FFNs, MoE and
fp8, per layer and micro-batch; the first pipeline stage holds ``min(pp, m)`` micro-batches in
flight (x ``1 + (pp-1)/(pp*vp)`` for the interleaved schedule). Offloaded layers and chunked
loss computation are the recipes' own memory savings, stated in the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clusterplan.specs.model import Model
from clusterplan.training.batch import PlanBatch

FloatArray = NDArray[np.float64]

WEIGHT_BYTES = 2.0
LOW_PRECISION_WEIGHT_BYTES = 1.0
#: fp8 parameters (Megatron --fp8-param-gather): the fp8 weight (rowwise, for forward) and its
#: columnwise copy (for the data-gradient GEMM), 1 B each; no bf16 copy.
FP8_PARAM_BYTES = 2.0
#: Bytes per element of a GEMM input kept for backward in fp8/fp4 plans: Transformer Engine's
#: Linear/LayerNormLinear save the quantized (fp8) input for the weight-gradient GEMM, not the
#: bf16 one (transformer_engine/pytorch/module/linear.py, layernorm_linear.py).
FP8_SAVED_INPUT_BYTES = 1.0
#: The same in fp4 plans: NVFP4 keeps 4-bit E2M1 values and one E4M3 scale per 16 values
#: (0.5 + 1/16 B); Transformer Engine's NVFP4 recipe runs the weight-gradient GEMM in NVFP4 too,
#: so the saved input is the quantized one (NVIDIA, "Pretraining Large Language Models with
#: NVFP4", arXiv:2509.25149, section 4).
FP4_SAVED_INPUT_BYTES = 0.5 + 1.0 / 16.0
#: The cross-entropy reads fp32 logits: Megatron's theoretical memory model counts
#: ``4*s*b*V`` bytes for them (``theoretical_memory_usage.py``, output layer and CE loss).
LOGIT_BYTES = 4.0
#: A fused cross-entropy keeps only the bf16 logits, which its backward overwrites with their
#: gradient (Transformer Engine ``parallel_cross_entropy``: saves the bf16 input, computes in
#: fp32 inside the kernel; transformer_engine/pytorch/cross_entropy.py).
FUSED_LOGIT_BYTES = 2.0
#: NVFP4 parameters (Megatron-Core ``fp4_param``, ``--fp4-param-gather``; Megatron-Bridge's
#: NVFP4 recipes set it, training/mixed_precision.py): the NVFP4 weight and its columnwise copy,
#: :data:`FP4_SAVED_INPUT_BYTES` each, as fp8 parameters keep two fp8 copies; no bf16 copy.
FP4_PARAM_BYTES = 2.0 * FP4_SAVED_INPUT_BYTES
COMM_BUFFER_BYTES = 2.0  # bf16 all-gather/reduce-scatter buffers of one layer's activation (TP only)


@dataclass(frozen=True)
class StageParams:
    """Parameters held by one chip of the first and of the last pipeline stage."""

    first: FloatArray
    last: FloatArray
    experts_first: FloatArray  # the routed-expert part of `first` (sharded over expert DP)
    experts_last: FloatArray

    @property
    def worst(self) -> FloatArray:
        result: FloatArray = np.maximum(self.first, self.last)
        return result

    @property
    def worst_experts(self) -> FloatArray:
        result: FloatArray = np.where(self.last > self.first, self.experts_last, self.experts_first)
        return result


def kv_shards(model: Model, tp: Any) -> FloatArray:
    """Ways the K/V heads are split: TP beyond ``kv_heads`` replicates them (Megatron and
    NeuronX Distributed replicate GQA heads across the extra TP ranks). MLA's latent is split
    like the query heads."""
    tp_f = np.asarray(tp, dtype=np.float64)
    result: FloatArray = tp_f if model.mla is not None else np.minimum(tp_f, model.kv_heads)
    return result


def kv_projection_params(model: Model) -> int:
    """Weights of the K and V projections (0 for MLA, whose latent projections split by TP)."""
    return 0 if model.mla is not None else 2 * model.hidden_size * model.kv_size


def expert_params_per_chip(model: Model, batch: PlanBatch) -> FloatArray:
    """Routed-expert parameters of an average layer on one chip: the experts are spread over EP
    and each is split over expert-TP."""
    if model.moe is None:
        return np.zeros(len(batch))
    routed = model.moe.experts * model.expert_params / (batch.ep * batch.etp)
    result: FloatArray = np.asarray(routed * model.moe_layers / model.layers, dtype=np.float64)
    return result


def layer_params_per_chip(model: Model, batch: PlanBatch) -> FloatArray:
    """Average transformer-layer parameters on one chip: TP shards every dense matrix (K/V only
    up to the number of KV heads) and the shared experts; the router is replicated; the routed
    experts follow :func:`expert_params_per_chip`."""
    tp = batch.tp.astype(np.float64)
    kv = kv_projection_params(model)
    per_layer_dense = ((model.attention_params - kv + model.norm_params_per_layer) / tp
                       + kv / kv_shards(model, tp))
    ffn = model.dense_ffn_layers * model.dense_ffn_params / model.layers / tp
    if model.moe is not None:
        shared = model.moe.shared_experts * model.expert_params / tp
        router = model.hidden_size * model.moe.experts
        ffn = ffn + model.moe_layers * (shared + router) / model.layers
    result: FloatArray = per_layer_dense + ffn + expert_params_per_chip(model, batch)
    return result


def stage_params(model: Model, batch: PlanBatch) -> StageParams:
    """Parameters per chip on the first stage (embedding) and the last (LM head, final norm,
    multi-token-prediction modules)."""
    per_layer = layer_params_per_chip(model, batch)
    experts = expert_params_per_chip(model, batch)
    tp = batch.tp.astype(np.float64)
    embedding = model.embedding_params / tp
    # The last stage holds the output matrix: its own copy when tied and pipelined.
    output = (model.embedding_params if model.tied_embeddings else model.lm_head_params) / tp
    final_norm = float(model.hidden_size)
    # Each MTP module: one transformer layer and a 2h x h projection (DeepSeek-V3 section 2.2).
    mtp = batch.mtp * (per_layer + 2.0 * model.hidden_size * model.hidden_size / tp)
    mtp_experts = batch.mtp * experts
    single_stage = (batch.layers_first * per_layer + embedding + model.lm_head_params / tp + final_norm
                    + mtp)
    first = np.where(batch.pp == 1, single_stage, batch.layers_first * per_layer + embedding)
    last = np.where(batch.pp == 1, single_stage, batch.layers_last * per_layer + output + final_norm + mtp)
    experts_first = np.where(batch.pp == 1, (batch.layers_first + batch.mtp) * experts,
                             batch.layers_first * experts)
    experts_last = batch.layers_last * experts + mtp_experts
    return StageParams(first=first, last=last, experts_first=experts_first, experts_last=experts_last)


def expert_data_parallel(batch: PlanBatch) -> FloatArray:
    """Replicas of each expert shard: tp*cp*dp / (ep*etp) (MoE parallel folding)."""
    result: FloatArray = (batch.tp * batch.cp * batch.dp / (batch.ep * batch.etp)).astype(np.float64)
    return result


def weight_bytes_per_param(batch: PlanBatch) -> FloatArray:
    """Bytes of model weights per parameter: bf16 (2 B), plus a 1 B low-precision copy in fp8/fp4
    plans; with low-precision parameters (``Plan.fp8_params``) no bf16 copy, only the quantized
    weight and its columnwise copy: 2 B in fp8, 1.125 B in NVFP4."""
    low_precision = batch.precision >= 2
    quantized = np.where(batch.precision == 3, FP4_PARAM_BYTES, FP8_PARAM_BYTES)
    result: FloatArray = np.where(low_precision & (batch.fp8_params == 1), quantized,
                                  WEIGHT_BYTES + np.where(low_precision, LOW_PRECISION_WEIGHT_BYTES, 0.0))
    return result


def model_state_bytes(params: FloatArray, batch: PlanBatch, layer_params: FloatArray,
                      expert_params: FloatArray | None = None) -> dict[str, FloatArray]:
    """Weights, gradients and optimizer state of ``params`` on one chip by ZeRO stage.

    Dense parameters shard over the ``dp_shard`` replicas; the routed-expert part
    (``expert_params``, included in ``params``) over the expert data-parallel replicas."""
    experts = np.zeros_like(params) if expert_params is None else expert_params
    dense = params - experts
    dense_shards = batch.dp_shard.astype(np.float64)
    expert_shards = np.maximum(np.minimum(expert_data_parallel(batch), dense_shards), 1.0)
    zero = batch.zero
    weight_bytes = weight_bytes_per_param(batch)
    grad_bytes = batch.grad_reduce_bytes.astype(np.float64)
    sharded = dense / dense_shards + experts / expert_shards  # ZeRO's slice of this chip's params
    weights = np.where(zero >= 3, sharded * weight_bytes + 2 * layer_params * weight_bytes,
                       params * weight_bytes)
    gradients = np.where(zero >= 2, sharded * grad_bytes, params * grad_bytes)
    state_bytes = batch.optimizer_bytes.astype(np.float64)
    optimizer = np.where(zero >= 1, sharded * state_bytes, params * state_bytes)
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer}


def recomputable_norms(model: Model) -> float:
    """Norms per layer (averaged over layers) that selective ``layernorm`` recompute re-runs.

    Megatron-Core skips norms fused into the following linear: its Transformer Engine spec fuses
    the attention norm into the QKV projection and a dense FFN's norm into its up-projection,
    while a MoE layer's pre-FFN norm stays a separate kernel because the router and the token
    dispatch both read its output (transformer_layer.py recomputes only norms that are not
    IdentityOp). So dense layers gain nothing from it."""
    return model.moe_layers / model.layers if model.moe is not None else 0.0


def checkpointed_module_widths(model: Model) -> dict[str, float]:
    """Per-token widths, averaged over layers, of what Megatron-Core's module checkpoints
    (``recompute_modules`` mlp, moe, shared_experts) stop keeping: the FFN intermediate width of
    the dense MLPs (``mlp``: dense layers only, transformer_layer.py), of a MoE layer's routed
    and shared experts (``moe``, moe/moe_layer.py) and of the shared experts alone
    (``shared_experts``); and ``mlp_norm``, the dense layers' share, whose pre-FFN norm output
    (fused into the MLP's first linear by the Transformer Engine spec) is then no longer kept."""
    dense_share = model.dense_ffn_layers / model.layers
    if model.moe is None:
        return {"mlp": dense_share * model.dense_ffn_size, "mlp_norm": dense_share, "moe": 0.0,
                "shared_experts": 0.0}
    moe_share = model.moe_layers / model.layers
    expert = model.moe.expert_ffn_hidden_size
    return {"mlp": dense_share * model.dense_ffn_size, "mlp_norm": dense_share,
            "moe": moe_share * (model.moe.top_k + model.moe.shared_experts) * expert,
            "shared_experts": moe_share * model.moe.shared_experts * expert}


def up_projection_bytes(model: Model, width: Any) -> Any:
    """Bytes per token of an FFN's up-projection output(s) of intermediate ``width`` in bf16 (gate
    and up for a gated FFN): the activation's input."""
    return (4.0 if model.ffn_activation == "swiglu" else 2.0) * width


def ffn_intermediate_bytes(model: Model, gemm_input: Any, width: Any) -> FloatArray:
    """Bytes per token an FFN of intermediate ``width`` keeps for backward: the up-projection
    output(s) in bf16 (two for a gated FFN) and the down-projection's input."""
    result: FloatArray = np.asarray(up_projection_bytes(model, width) + gemm_input * width, dtype=np.float64)
    return result


def saved_gemm_input_bytes(batch: PlanBatch) -> FloatArray:
    """Bytes per element of a projection GEMM's input kept for backward: bf16 (2 B), the fp8
    copy (1 B) in fp8 plans, the NVFP4 copy (0.5625 B) in fp4 plans."""
    result: FloatArray = np.select([batch.precision == 2, batch.precision == 3],
                                   [FP8_SAVED_INPUT_BYTES, FP4_SAVED_INPUT_BYTES], 2.0)
    return result


def activation_bytes_per_layer(model: Model, batch: PlanBatch) -> FloatArray:
    """Activations one layer keeps for backward for one micro-batch, per chip (no recompute).

    Korthikanti et al. 2022 eq. (1)-(2): ``s*b*h*(10 + 24/t + 5*a*s/(h*t))`` for GPT with
    TP and ``34*s*b*h/t`` with SP + selective recompute; here the terms are rebuilt from the
    architecture: replicated region (norm inputs, QKV and FFN inputs, dropout masks) divided by
    TP only with sequence parallelism; QKV outputs, attention output, FFN intermediates divided
    by TP; the attention score matrix only without flash attention.

    fp8/fp4 plans keep the inputs of the projection GEMMs (the two norm outputs, the attention
    output feeding the output projection, the FFN down-projection's input, the routed tokens
    feeding the experts) as the quantized 1 B copy Transformer Engine saves for the
    weight-gradient GEMM. Flash attention still keeps its bf16 output for its own backward, so
    there the output projection's fp8 input is an extra copy; the norm inputs and the gated
    FFN's up-projection outputs stay bf16.
    """
    h = model.hidden_size
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    tp = batch.tp.astype(np.float64)
    low_precision = batch.precision >= 2
    gemm_input = saved_gemm_input_bytes(batch)
    replicated = 2.0 * 2 * h + gemm_input * h + gemm_input * h + (2.0 * h if model.dropout else 0.0)
    ffn_width = model.ffn_matmul_width
    # Up-projection output(s) (the activation's input) and the down-projection's input.
    up_outputs = up_projection_bytes(model, ffn_width)
    ffn = up_outputs + gemm_input * ffn_width
    dispatch: FloatArray | float = 0.0
    if model.moe is not None:
        # Routed tokens are also kept in the dispatch buffer (permuted copy of the input).
        dispatch = gemm_input * h * model.moe.top_k * model.moe_layers / model.layers
        ffn = ffn + dispatch
    flash = batch.flash == 1
    # The output projection's input: the attention output (bf16), which flash attention also
    # keeps; in fp8 the projection keeps its own 1 B copy, beside flash attention's bf16 one.
    bf16_output = np.where(low_precision & ~flash, 0.0, 2.0)
    attention_output = bf16_output + np.where(low_precision, gemm_input, 0.0)
    if model.mla is not None:
        # MLA: per-head Q and K of nope+rope dims, V and the attention output of v dims, and the
        # compressed latents the up-projections read (DeepSeek-V2 section 2.1).
        m = model.mla
        heads = model.attention_heads
        qk = heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
        latents = 2.0 * (m.kv_lora_rank + m.qk_rope_head_dim + (m.q_lora_rank or 0))
        attention_width = float(heads * m.v_head_dim)
        sharded = 2.0 * qk + attention_output * attention_width + ffn + latents
        keys_values = 2.0 * qk + 2.0 * heads * m.v_head_dim
        queries = 2.0 * qk
    else:
        attention_width = float(model.q_size)
        sharded = 2.0 * model.q_size + attention_output * attention_width + ffn  # Q, attention output, FFN
        keys_values = 2.0 * model.kv_size + 2.0 * model.kv_size  # K and V
        queries = 2.0 * model.q_size
    # Selective recompute of the norms drops the separate norms' outputs (a MoE layer's FFN
    # input); of the MoE activation, the routed experts' activation output (the down-projection's
    # input).
    kept_replicated = replicated - np.where(batch.recomputes("layernorm"),
                                            gemm_input * h * recomputable_norms(model), 0.0)
    moe = batch.recomputes("moe")  # the whole MoE layer, activation and shared experts included
    kept_sharded = sharded - np.where(batch.recomputes("moe_act") & ~moe,
                                      gemm_input * model.routed_ffn_width, 0.0)
    # Megatron-Core's module checkpoints (checkpointed_module_widths): what each keeps is its
    # input, which the layer keeps anyway; it drops the intermediates (and MLA's Q, K, V).
    widths = checkpointed_module_widths(model)
    mla_up_proj = batch.recomputes("mla_up_proj") & (model.mla is not None)  # MLA only (Plan refuses it else)
    kept_replicated = kept_replicated - np.where(batch.recomputes("mlp"), gemm_input * h * widths["mlp_norm"], 0.0)
    kept_sharded = kept_sharded - (
        np.where(batch.recomputes("mlp"), ffn_intermediate_bytes(model, gemm_input, widths["mlp"]), 0.0)
        + np.where(moe, ffn_intermediate_bytes(model, gemm_input, widths["moe"]) + dispatch, 0.0)
        + np.where(batch.recomputes("shared_experts") & ~moe,
                   ffn_intermediate_bytes(model, gemm_input, widths["shared_experts"]), 0.0)
        + np.where(mla_up_proj, queries, 0.0))
    kept_keys_values = np.where(mla_up_proj, 0.0, keys_values)
    # Selective recompute of every elementwise op (MaxText 'minimal') keeps the layer input and the
    # outputs of the attention and FFN output projections (3 x 2h) in place of the norm inputs and
    # outputs, drops the FFN down-projection's input (the activation is re-run from the kept
    # up-projection outputs) and, with the attention core also recomputed, the attention output.
    elementwise = batch.recomputes("elementwise")
    kept_replicated = np.where(elementwise, 3 * 2.0 * h + (2.0 * h if model.dropout else 0.0), kept_replicated)
    kept_sharded = kept_sharded - np.where(elementwise, gemm_input * ffn_width, 0.0) - np.where(
        elementwise & batch.recomputes("core_attn"), attention_output * attention_width, 0.0)
    # Fine-grained activation offloading (Plan.offload_modules) moves each named submodule's input
    # to host memory between forward and backward: the norm inputs (2h each, bf16) and the QKV
    # input of the replicated region; Q (and K, V), the attention output, the routed tokens and
    # the experts' up-projection outputs of the sharded one.
    kept_replicated = kept_replicated - (np.where(batch.offloads("attn_norm"), 2.0 * h, 0.0)
                                         + np.where(batch.offloads("mlp_norm"), 2.0 * h, 0.0)
                                         + np.where(batch.offloads("qkv_linear"), gemm_input * h, 0.0))
    offloaded_qkv = batch.offloads("core_attn") & ~mla_up_proj
    kept_sharded = kept_sharded - (np.where(offloaded_qkv, queries, 0.0)
                                   + np.where(batch.offloads("attn_proj"), attention_output * attention_width, 0.0)
                                   + np.where(batch.offloads("expert_fc1"), dispatch, 0.0)
                                   + np.where(batch.offloads("moe_act"),
                                              up_projection_bytes(model, model.routed_ffn_width), 0.0))
    kept_keys_values = np.where(offloaded_qkv, 0.0, kept_keys_values)
    replicated_div = np.where(batch.sp == 1, tp, 1.0)
    per_token = kept_replicated / replicated_div + kept_sharded / tp + kept_keys_values / kv_shards(model, tp)
    per_score = 5.0 if model.dropout else 2.0
    scores = np.where(flash, 0.0, per_score * model.attention_heads * batch.seq_len / tp)
    scores_kept = (batch.recompute == 0) | ((batch.recompute == 1) & ~batch.recomputes("core_attn"))
    result: FloatArray = tokens * (per_token + np.where(scores_kept, scores, 0.0))
    return result


def resident_layers(batch: PlanBatch, layers: Any) -> FloatArray:
    """Layers whose activations are in device memory at the peak (the start of backward):
    activation offloading (Megatron ``--cpu-offloading-num-layers``, pp=1) moves the first
    ``offload_layers`` to host memory, finishing each offload before the peak and starting each
    reload after it, so the peak is ``(layers - offloaded) * T`` for layers of ``T`` bytes each
    (Transformer Engine transformer_engine/pytorch/cpu_offload.py, OffloadSynchronizer's default
    schedule)."""
    result: FloatArray = np.asarray(layers, dtype=np.float64) - batch.offload_layers
    return result


def logit_bytes(model: Model, batch: PlanBatch) -> FloatArray:
    """Logits held for the cross-entropy on the last stage: fp32 (Megatron's theoretical memory
    model, ``4*s*b*V/t``) or, with a fused cross-entropy, the bf16 logits only; one token chunk
    at a time with chunked loss computation (MaxText ``num_vocab_tiling``: the logits are
    computed, reduced and rematerialised per chunk)."""
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    width = np.where(batch.fused_cross_entropy == 1, FUSED_LOGIT_BYTES, LOGIT_BYTES)
    result: FloatArray = tokens / batch.loss_chunks * model.vocab_size / batch.tp * width
    return result


@dataclass(frozen=True)
class InFlight:
    """Chunk forwards a pipeline rank holds at its peak: all of them, and those of its edge chunk
    (chunk 0 of the first rank, the last chunk of the last rank)."""

    chunks: FloatArray
    edge_chunks: FloatArray


def in_flight_chunks(batch: PlanBatch, last_rank: bool) -> InFlight:
    """Forward passes of model chunks whose activations the first (or last) pipeline rank holds
    at its peak.

    Megatron-Core's schedules (megatron/core/pipeline_parallel/schedules.py): rank ``r`` of
    ``pp`` runs ``W = pp - r - 1`` warm-up forwards before its first backward with 1F1B, and
    ``W = 2 (pp - r - 1) + (vp - 1) G`` with the interleaved schedule, whose forwards take the
    chunks in turn for groups of ``G`` micro-batches (``microbatch_group_size_per_vp_stage``,
    default ``pp``); with the steady state's next forward, ``min(W + 1, micro_batches * vp)``
    chunk forwards are held at the peak, chunk ``c`` receiving ``R G + clip(F - R G vp - c G,
    0, G)`` of ``F`` of them after ``R`` full rounds. Without interleaving that is
    ``min(pp, micro_batches)`` on the first rank and 1 on the last; interleaved, the last rank
    holds ``(vp - 1) pp + 1`` chunks, not one (Korthikanti et al. 2022's factor ``1 + (pp -
    1)/(pp vp)`` is the first rank's count over equal chunks)."""
    pp = batch.pp.astype(np.float64)
    vp = batch.vp.astype(np.float64)
    rank = pp - 1.0 if last_rank else np.zeros_like(pp)
    group = pp
    warmup = np.where(vp > 1, 2.0 * (pp - rank - 1.0) + (vp - 1.0) * group, pp - rank - 1.0)
    held = np.minimum(warmup + 1.0, batch.micro_batches.astype(np.float64) * vp)
    rounds = np.floor(held / (group * vp))
    rest = held - rounds * group * vp
    edge = vp - 1.0 if last_rank else np.zeros_like(vp)
    return InFlight(chunks=held, edge_chunks=rounds * group + np.clip(rest - edge * group, 0.0, group))


def held_layers(batch: PlanBatch, layers: Any, last_rank: bool) -> tuple[FloatArray, FloatArray]:
    """Layer activations the first (or last) pipeline rank holds at its peak, and its held
    forwards of chunk 0 (one embedding output each on the first rank).

    A chunk carries a middle rank's ``layers_middle / vp`` layers, except the rank's edge chunk
    (chunk 0 of the first rank, which also holds the embedding; the last chunk of the last rank,
    which holds the loss), which takes what the rank's ``layers`` leave: Megatron's
    embedding/loss-aware split and layouts such as DeepSeek-V3's ``Et|(tt|)*30mL``. A rank whose
    count is not of that form spreads its layers evenly over its chunks."""
    flight = in_flight_chunks(batch, last_rank)
    vp = batch.vp.astype(np.float64)
    total = np.asarray(layers, dtype=np.float64)
    size = batch.layers_middle / vp
    edge = total - (vp - 1.0) * size
    regular = (edge >= 0.0) & (edge <= size)
    result: FloatArray = np.where(regular, size * flight.chunks + (edge - size) * flight.edge_chunks,
                                  total / vp * flight.chunks)
    return result, flight.edge_chunks


def activation_bytes(model: Model, batch: PlanBatch) -> dict[str, FloatArray]:
    """Activation bytes of the first and last stage chips (in-flight micro-batches included)."""
    h = model.hidden_size
    tp = batch.tp.astype(np.float64)
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    full_layer = activation_bytes_per_layer(model, batch)
    layer_input = tokens * 2.0 * h / np.where(batch.sp == 1, tp, 1.0)
    stored = np.where(batch.recompute == 2, layer_input, full_layer)
    # Full recompute re-materialises one layer at a time during backward.
    working = np.where(batch.recompute == 2, full_layer, 0.0)
    first_held, first_chunk_forwards = held_layers(batch, resident_layers(batch, batch.layers_first), False)
    last_held, _ = held_layers(batch, batch.layers_last, True)
    # Embedding output kept for backward (Megatron: s*b*h per chunk-0 forward in flight).
    embedding = tokens * h * np.where(batch.sp == 1, 1.0 / tp, 1.0) * first_chunk_forwards
    first: FloatArray = np.asarray(first_held * stored + working + embedding, dtype=np.float64)
    last_layers = np.asarray(last_held * stored + working, dtype=np.float64)
    last: FloatArray = np.where(batch.pp == 1, first, last_layers) + logit_bytes(model, batch)
    return {"first": first, "last": last}


def memory_breakdown(model: Model, batch: PlanBatch, reserved_bytes: float,
                     params: StageParams | None = None) -> dict[str, FloatArray]:
    """Memory per chip on the fuller of the first and last pipeline stage, by component:
    weights, gradients, optimizer, activations, buffers (TP communication buffers and the
    runtime reserve). Cheap: the plan search calls it on every candidate before timing any."""
    params = params if params is not None else stage_params(model, batch)
    layer_params = layer_params_per_chip(model, batch)
    acts = activation_bytes(model, batch)
    state_first = model_state_bytes(params.first, batch, layer_params, params.experts_first)
    state_last = model_state_bytes(params.last, batch, layer_params, params.experts_last)
    use_last = (sum(state_last.values()) + acts["last"]) > (sum(state_first.values()) + acts["first"])
    breakdown = {key: np.where(use_last, state_last[key], state_first[key]) for key in state_first}
    breakdown["activations"] = np.where(use_last, acts["last"], acts["first"])
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    # TP all-gather/reduce-scatter buffers exist only where there is a TP group.
    tp_buffers = np.where(batch.tp > 1, 2.0 * tokens * model.hidden_size * COMM_BUFFER_BYTES, 0.0)
    breakdown["buffers"] = tp_buffers + reserved_bytes
    return breakdown
