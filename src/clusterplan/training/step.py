"""Training step time and memory for a batch of plans on one system (the vectorised core).

Per micro-batch and pipeline stage, every transformer layer costs its GEMMs (roofline with
fitted efficiency), its fused attention, its memory-bound elementwise kernels, and the exposed
part of its TP, CP and EP communication. Stages run the pipeline schedule (1F1B or interleaved:
bubble ``(p-1)/v`` stage-times, Narayanan et al. 2021); the data-parallel gradient reduction
overlaps the backward of the last micro-batch bucket by bucket (exposed only where it is longer,
and the last bucket always); the optimizer is memory-bound. All inputs are arrays over plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clusterplan.costs import collectives as coll
from clusterplan.costs.attention import (
    ATTENTION_KERNELS,
    BACKWARD_FLOPS,
    measured_head_dim_ratio,
    rate_by_code,
    reference_kernel,
)
from clusterplan.costs.compute import (
    OPERAND_BYTES,
    Efficiency,
    attention_head_dim_factor,
    attention_plateau_rate,
    gemm_time,
    grouped_gemm_time,
    matmul_eff_by_precision,
    memory_time,
    peak_by_precision,
    permutation_bytes,
)
from clusterplan.specs.chip import Chip
from clusterplan.specs.model import Model
from clusterplan.specs.plan import ATTENTION_KERNEL_CODES
from clusterplan.specs.system import System
from clusterplan.training import flops as fl
from clusterplan.training import memory as mem
from clusterplan.training.batch import PlanBatch

FloatArray = NDArray[np.float64]

ACTIVATION_BYTES = 2.0  # bf16 activations and TP/CP/PP messages
#: Adam's HBM traffic per parameter besides its state: read the fp32 gradient, write the bf16
#: weight; the state (master copy and moments, PlanBatch.optimizer_bytes) is read and written.
ADAM_GRAD_AND_WEIGHT_BYTES = 4.0 + 2.0
KERNELS_PER_LAYER_FORWARD = 12.0  # norms, QKV, rope, attention, proj, adds, FFN GEMMs, activation
BACKWARD_KERNEL_FACTOR = 2.0
FLASH_BACKWARD_FACTOR = BACKWARD_FLOPS  # FlashAttention-2 backward: 5 matmuls vs 2 forward (Dao 2023)


def _with_collective_efficiency(system: System, eff: Efficiency) -> System:
    """Apply the family's fitted collective multipliers to the catalog tier efficiencies."""
    if eff.scale_up_collectives == 1.0 and eff.scale_out_collectives == 1.0:
        return system
    tiers = tuple(
        tier.model_copy(update={"efficiency": min(1.0, tier.efficiency * (
            eff.scale_out_collectives if tier.size is None else eff.scale_up_collectives))})
        for tier in system.tiers
    )
    return system.model_copy(update={"tiers": tiers})


@dataclass(frozen=True)
class Hardware:
    """A system with its chip and the chip family's fitted efficiencies."""

    system: System
    chip: Chip
    efficiency: Efficiency
    #: the datasheet's dense peak FLOP/s per precision code (MFU is taken against it)
    rated_peak: FloatArray = field(init=False)
    #: the peak the kernels' times run at: the datasheet's times the chip's sustained-clock ratio
    peak: FloatArray = field(init=False)
    matmul_eff: FloatArray = field(init=False)
    #: each attention kernel's rate relative to the family's reference one, by kernel code
    #: (:mod:`clusterplan.costs.attention`; measured, all 1.0 for a family without measurements)
    attention_rates: FloatArray = field(init=False)
    #: the kernels with a measured rate on the family (the reference included; none without measurements)
    attention_measured: frozenset[str] = field(init=False)
    #: each kernel's measured rate by head dimension over its rate at 128 (costs/attention.head_dim_ratios)
    attention_head_dims: dict[str, dict[int, float]] = field(init=False)
    #: attention_dim_rates by (qk, v) head dimensions, filled on first use (serving steps ask per step)
    _dim_rates: dict[tuple[float, float], FloatArray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Deferred: the catalog loader builds Hardware, so it imports this module.
        from clusterplan.catalog.loader import attention_head_dim_ratios, attention_kernel_rates

        rates = attention_kernel_rates(self.chip.family)
        object.__setattr__(self, "attention_rates", rate_by_code(rates))
        object.__setattr__(self, "attention_measured", frozenset(rates))
        object.__setattr__(self, "attention_head_dims", attention_head_dim_ratios(self.chip.family))
        object.__setattr__(self, "_dim_rates", {})
        rated = peak_by_precision(self.chip)
        object.__setattr__(self, "rated_peak", rated)
        object.__setattr__(self, "peak", rated * self.efficiency.sustained_for(self.chip.name))
        object.__setattr__(self, "matmul_eff", matmul_eff_by_precision(self.efficiency))
        object.__setattr__(self, "system", _with_collective_efficiency(self.system, self.efficiency))

    def attention_rate(self, kernel: str) -> float:
        """A named attention library's measured rate relative to the family's reference one."""
        return float(self.attention_rates[ATTENTION_KERNEL_CODES[kernel]])

    def attention_dim_rates(self, qk_head_dim: float, v_head_dim: float) -> FloatArray:
        """Each attention kernel's rate at these head dimensions over its rate at 128, by kernel
        code: the kernel's measured ratio where the family's catalog has it at other head
        dimensions and these lie in the measured range (:func:`measured_head_dim_ratio`), else
        the GEMM-like loss of :func:`attention_head_dim_factor` with the family's fitted
        ``matmul_dim_half``. A kernel never measured on the family runs as the reference does."""
        key = (float(qk_head_dim), float(v_head_dim))
        if key in self._dim_rates:
            return self._dim_rates[key]
        fallback = float(attention_head_dim_factor(qk_head_dim, v_head_dim, self.efficiency.matmul_dim_half))

        def rate(kernel: str) -> float:
            measured = measured_head_dim_ratio(self.attention_head_dims.get(kernel, {}), qk_head_dim, v_head_dim)
            return fallback if measured is None else measured

        reference = rate("auto")
        rates = np.array([rate(name) if name == "auto" or name in self.attention_measured else reference
                          for name in ATTENTION_KERNELS])
        rates.setflags(write=False)
        self._dim_rates[key] = rates
        return rates

    @property
    def attention_reference(self) -> str:
        """The attention library ``auto`` means on this family (costs/attention.py)."""
        return reference_kernel(self.chip.family)

    def attention_kernel_measured(self, kernel: str) -> bool:
        """Whether ``kernel`` has a measured rate on this family (``auto`` is the reference);
        an unmeasured one runs at the reference's rate (Blackwell has cuDNN and FlashAttention-2
        curves, but FlashAttention-1 and -3 do not run on it)."""
        return kernel == "auto" or kernel in self.attention_measured


@dataclass(frozen=True)
class StepEstimate:
    """Arrays over plans. Times in seconds, memory in bytes, throughput per chip."""

    step_time: FloatArray
    time_breakdown: dict[str, FloatArray]
    memory_breakdown: dict[str, FloatArray]
    memory: FloatArray
    fits: NDArray[np.bool_]
    tokens_per_step: FloatArray
    tokens_per_s_per_chip: FloatArray
    model_flops_per_s_per_chip: FloatArray
    mfu: FloatArray
    hfu: FloatArray


def elementwise_widths(model: Model, dropout: bool) -> tuple[float, float]:
    """Activation elements read and written per token and layer by the memory-bound kernels:
    (on the full hidden state, which TP ranks replicate unless sequence-parallel; on the TP
    shard). Full: two norms (2h each, read and written), two residual adds (3h), and with
    ``dropout`` two dropouts (2.5h). Shard: rope on q and k, and the FFN activation (3x its
    width for SwiGLU, 2x otherwise)."""
    h = float(model.hidden_size)
    replicated = norm_width(model) + 2 * 3.0 * h + (2 * 2.5 * h if dropout else 0.0)
    activation = activation_width(model, model.ffn_matmul_width)
    return replicated, 2.0 * (model.q_size + model.kv_size) + activation


def norm_width(model: Model, norms: float = 2.0) -> float:
    """Elements per token that ``norms`` norms read and write (2h each; a layer has two)."""
    return norms * 2.0 * model.hidden_size


def activation_width(model: Model, ffn_width: float) -> float:
    """Elements per token the FFN activation of intermediate width ``ffn_width`` reads and
    writes: gate and up read, product written for SwiGLU (3x); read and written otherwise (2x)."""
    return (3.0 if model.ffn_activation == "swiglu" else 2.0) * ffn_width


def _layer_forward(model: Model, hw: Hardware, batch: PlanBatch) -> dict[str, FloatArray]:
    """Forward times of one average layer for one micro-batch on one chip, by component."""
    eff = hw.efficiency
    chip = hw.chip
    h = model.hidden_size
    tp = batch.tp.astype(np.float64)
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    peak = hw.peak[batch.precision]
    mm_eff = hw.matmul_eff[batch.precision]
    operand = OPERAND_BYTES[batch.precision]
    overhead = eff.kernel_overhead_s

    def gemm(n: Any, k: Any, m: Any = tokens, groups: Any = 1.0, scale: float = 1.0) -> FloatArray:
        return grouped_gemm_time(m, groups, n, k, peak, mm_eff * scale, operand, chip.hbm_bandwidth, eff.hbm,
                                 overhead, eff.matmul_dim_half)

    _, av_width = fl.attention_core_width(model)
    out_in = av_width
    kv_width = mem.kv_projection_params(model) / h
    proj_in_width = (model.attention_params - out_in * h) / h - kv_width
    qkv_width = proj_in_width / tp + kv_width / mem.kv_shards(model, tp)
    qkv = gemm(qkv_width, h)
    attention_proj = qkv + gemm(h, out_in / tp)
    ffn_width = model.ffn_matmul_width
    gated = model.ffn_matrices - 1  # up (+ gate) matrices
    dense_ffn = gemm(gated * model.dense_ffn_size / tp, h) + gemm(h, model.dense_ffn_size / tp)
    ffn = dense_ffn
    moe_ffn = shared_ffn = np.zeros(len(batch))
    if model.moe is not None:
        moe_ffn, shared_ffn = _moe_ffn_forward(model, batch, gemm, tokens, tp, eff)
        ffn = (model.dense_ffn_layers * dense_ffn + model.moe_layers * moe_ffn) / model.layers

    # Attention core: causal flash attention does half the score blocks; without flash the
    # full s x s scores are computed as batched GEMMs and round-trip HBM for softmax/dropout.
    seq = batch.seq_len.astype(np.float64)
    core_flops = fl.attention_core_flops(model, seq) * tokens / tp
    bf16_peak = hw.peak[1]
    flash_eff = (eff.attention * hw.attention_rates[batch.attention_kernel]
                 * hw.attention_dim_rates(*fl.attention_head_dims(model))[batch.attention_kernel])
    causal_flops = fl.causal_attention_core_flops(model, seq) * tokens / tp  # window layers: the band
    flash_time = causal_flops / attention_span_rate(model, seq, batch.cp) / (bf16_peak * flash_eff) + overhead
    score_elements = model.attention_heads / tp * tokens * seq
    score_traffic = score_elements * (13.0 if model.dropout else 8.0)
    unfused = (core_flops / (bf16_peak * hw.matmul_eff[1])
               + memory_time(score_traffic, chip.hbm_bandwidth, eff.hbm) + 3 * overhead)
    attention_core = np.where(batch.flash == 1, flash_time, unfused)

    # Memory-bound kernels (elementwise_widths); the replicated region is sharded only with
    # sequence parallelism; fp8 adds casts.
    replicated, sharded = elementwise_widths(model, model.dropout)
    cast = np.where(batch.precision >= 2, 1.5 * (2 * h + out_in + ffn_width), 0.0)
    elementwise_bytes = ACTIVATION_BYTES * tokens * (
        replicated / np.where(batch.sp == 1, tp, 1.0) + sharded / tp) + tokens * cast / tp
    elementwise = memory_time(elementwise_bytes, chip.hbm_bandwidth, eff.hbm)
    elementwise = elementwise + (KERNELS_PER_LAYER_FORWARD - 6.0) * overhead
    # The parts of it that selective recompute may re-run (recompute_modules layernorm, moe_act).
    separate_norms = mem.recomputable_norms(model)
    norms = (memory_time(ACTIVATION_BYTES * tokens * norm_width(model, separate_norms)
                         / np.where(batch.sp == 1, tp, 1.0), chip.hbm_bandwidth, eff.hbm)
             + separate_norms * overhead)
    routed_share = model.moe_layers / model.layers if model.moe is not None else 0.0

    def activation(width: float, share: float) -> FloatArray:
        """The FFN activation kernel of intermediate ``width`` (per token, averaged over layers)
        on ``share`` of the layers."""
        result: FloatArray = (memory_time(ACTIVATION_BYTES * tokens * activation_width(model, width) / tp,
                                          chip.hbm_bandwidth, eff.hbm) + share * overhead)
        return result

    moe_activation = activation(model.routed_ffn_width, routed_share)
    # The parts Megatron-Core's module checkpoints re-run (recompute_modules mlp, moe,
    # shared_experts, mla_up_proj): an FFN's GEMMs and activation on its share of the layers,
    # and MLA's up-projections with the RoPE/concat building the per-head Q and K.
    widths = mem.checkpointed_module_widths(model)
    dense_share = model.dense_ffn_layers / model.layers
    parts = {"dense_ffn": dense_share * dense_ffn + activation(widths["mlp"], dense_share),
             "moe_ffn": routed_share * moe_ffn + activation(widths["moe"], routed_share),
             "shared_experts": routed_share * shared_ffn + activation(widths["shared_experts"], routed_share),
             "mla_up_proj": np.zeros(len(batch))}
    if model.mla is not None:
        m = model.mla
        heads = model.attention_heads
        qk = heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
        up_projections = (gemm(qk / tp, m.q_lora_rank or h)
                          + gemm(heads * (m.qk_nope_head_dim + m.v_head_dim) / tp, m.kv_lora_rank))
        # RoPE and the concatenations read and write the per-head Q and K once each.
        rope = memory_time(ACTIVATION_BYTES * tokens * 2.0 * 2.0 * qk / tp, chip.hbm_bandwidth, eff.hbm)
        parts["mla_up_proj"] = up_projections + rope + 2 * overhead

    gemms = attention_proj + ffn
    return {"gemm": gemms, "qkv": qkv, "attention": attention_core, "elementwise": elementwise,
            "norms": norms, "moe_activation": moe_activation,
            "moe_permutation": moe_permutation_forward(model, hw, batch), **parts}


def attention_span_rate(model: Model, seq: FloatArray, cp: Any) -> FloatArray:
    """Fused attention's rate on this plan's key spans relative to the long-sequence plateau its
    efficiency is measured on (:func:`~clusterplan.costs.compute.attention_plateau_rate`),
    weighted by each layer kind's share of the causal FLOPs: a full layer attends over its
    sequence, or with ring attention over ``cp`` chunks of it (each step a chunk of queries
    against a chunk of keys); a window layer over ``min(W, seq/cp)``. Absolute since round 19,
    when the attention efficiency became the kernel measurement itself (calibrate.AT_MEASUREMENT):
    while it was fitted, the fit set its level at the published rows' typical length, and only
    ratios (a cut span against the whole sequence) were applied (docs/validation.md, rounds 5,
    18 and 19)."""
    span = seq / np.asarray(cp, dtype=np.float64)
    chunked: FloatArray = attention_plateau_rate(span)
    if model.window_layers == 0:
        return chunked
    full_work = model.full_attention_layers * seq / 2.0  # pairs per query, summed over layers
    window_work = model.attended_pairs(0.0, seq) * model.layers / seq - full_work
    windowed = attention_plateau_rate(np.minimum(float(model.sliding_window or 0), span))
    result: FloatArray = (full_work + window_work) / (full_work / chunked + window_work / windowed)
    return result


def rank_share_cv(gini: Any, experts_per_rank: Any) -> FloatArray:
    """Coefficient of variation of an EP rank's expected share of the routed tokens when the
    per-expert shares have Gini coefficient ``gini``: about ``gini * sqrt(pi)`` per expert (normal
    approximation), averaged down by the rank's ``experts_per_rank`` experts."""
    result: FloatArray = np.asarray(gini, dtype=np.float64) * np.sqrt(np.pi) / np.sqrt(experts_per_rank)
    return result


def moe_imbalance(model: Model, batch: PlanBatch) -> FloatArray:
    """Max/mean routed load over the EP ranks of one micro-batch (the straggler sets the pace).

    Per-expert loads with Gini coefficient G have a coefficient of variation of about G*sqrt(pi)
    (normal approximation); a rank holding E/ep experts averages them (CV/sqrt(E/ep)); the
    largest of ep ranks sits about sqrt(2 ln ep) standard deviations above the mean. A capacity
    factor (token dropping) caps the load. With ep = 1 every expert is local: no straggler.
    """
    if model.moe is None:
        return np.ones(len(batch))
    ep = batch.ep.astype(np.float64)
    cv_rank = rank_share_cv(batch.routing_gini, model.moe.experts / ep)
    straggler = 1.0 + cv_rank * np.sqrt(2.0 * np.log(np.maximum(ep, 1.0)))
    capped = np.where(batch.capacity_factor > 0, np.minimum(straggler, batch.capacity_factor), straggler)
    result: FloatArray = np.where(ep > 1, capped, 1.0)
    return result


def _moe_ffn_forward(model: Model, batch: PlanBatch, gemm: Any, tokens: FloatArray,
                     tp: FloatArray, eff: Efficiency) -> tuple[FloatArray, FloatArray]:
    """Forward time of one MoE FFN on one chip: router, shared experts (TP-sharded like a dense
    FFN), routed experts as grouped GEMMs on the tokens this rank receives (sequence-parallel
    tokens x top_k x imbalance, split over expert-TP), and the token permutations; and the
    shared experts' GEMMs alone (0 without shared experts)."""
    assert model.moe is not None
    moe = model.moe
    h = model.hidden_size
    gated = model.ffn_matrices - 1
    local_tokens = tokens / tp  # MoE layers take the sequence-parallel shard of the tokens
    etp = batch.etp.astype(np.float64)
    groups = moe.experts / batch.ep.astype(np.float64)
    visits = local_tokens * moe.top_k * moe_imbalance(model, batch) * etp
    width = moe.expert_ffn_hidden_size / etp
    grouped = eff.grouped_matmul
    # Transformer Engine's grouped GEMM runs one cuBLAS GEMM per local expert on a few streams
    # (nvte_multi_stream_cublas_gemm, "for now, we only have multi-stream cublas backend"), so
    # each of the two GEMMs pays a fixed cost per local expert (backward's two per GEMM double it
    # with the rest of the layer).
    routed = (gemm(gated * width, h, m=visits, groups=groups, scale=grouped)
              + gemm(h, width, m=visits, groups=groups, scale=grouped)
              + 2.0 * groups * eff.expert_gemm_overhead_s)
    router = gemm(moe.experts, h, m=local_tokens)
    time = routed + router + eff.moe_layer_overhead_s
    shared_time = np.zeros_like(time)
    if moe.shared_experts:
        shared = moe.shared_experts * moe.expert_ffn_hidden_size
        up, down = gemm(gated * shared / tp, h), gemm(h, shared / tp)
        time = time + up + down
        shared_time = up + down
    result: FloatArray = time
    return result, shared_time


def moe_permutation_forward(model: Model, hw: Hardware, batch: PlanBatch) -> FloatArray:
    """Forward time of one average layer's MoE token permutations on one chip (memory-bound).

    Megatron-Core's dispatchers (megatron/core/transformer/moe/token_dispatcher.py) copy every
    routed token copy into per-expert order before the experts and back after them: ``permute``
    and ``unpermute`` (fused or not, one read and one write of each copy's hidden state), and the
    flat all-to-all dispatcher with more than one local expert also sorts the received chunks by
    local expert and unsorts them (``sort_chunks_by_idxs``, "Permutation 2"); the flex (DeepEP,
    HybridEP) dispatcher permutes the received tokens once each way. Backward moves the
    gradients through the same passes once. Each pass reads and writes the bf16 hidden state of
    the rows this rank's experts receive (the routed GEMMs' ``visits``). The bytes, unlike the
    GEMMs, do not shrink with the experts' width: fine-grained experts (Qwen3-30B-A3B's 768)
    spend relatively most on them, and lower GEMM precision does not speed them up."""
    if model.moe is None:
        return np.zeros(len(batch))
    moe = model.moe
    tp = batch.tp.astype(np.float64)
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    visits = tokens / tp * moe.top_k * moe_imbalance(model, batch) * batch.etp.astype(np.float64)
    local_experts = moe.experts / batch.ep.astype(np.float64)
    sorts = (batch.ep > 1) & (batch.ep_dedup == 0) & (local_experts > 1)
    passes = 2.0 + np.where(sorts, 2.0, 0.0)
    traffic = permutation_bytes(visits, model.hidden_size, passes, ACTIVATION_BYTES)
    eff = hw.efficiency
    per_layer = memory_time(traffic, hw.chip.hbm_bandwidth, eff.hbm) + passes * eff.kernel_overhead_s
    result: FloatArray = per_layer * model.moe_layers / model.layers
    return result


def _tp_comm_forward(model: Model, hw: Hardware, batch: PlanBatch) -> FloatArray:
    """TP collectives of one layer's forward: 2 all-reduces, or with SP 2 all-gathers and
    2 reduce-scatters, of the ``tokens x h`` activation (Korthikanti et al. 2022, Fig. 5)."""
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    message = tokens * model.hidden_size * ACTIVATION_BYTES
    phases = coll.decompose(hw.system, batch.tp, np.ones_like(batch.tp))
    # 2 all-gathers + 2 reduce-scatters (SP) move the same bytes as 2 all-reduces (no SP); the
    # all-reduces may take the tree's latency, and SP issues twice the calls.
    moved = np.where(batch.sp == 1, 4.0 * coll.reduce_scatter_time(phases, message),
                     2.0 * coll.all_reduce_time(phases, message))
    calls = np.where(batch.sp == 1, 4.0, 2.0) * hw.efficiency.collective_overhead_s
    result: FloatArray = np.where(batch.tp > 1, moved + calls, 0.0)
    return result


def _cp_comm_forward(model: Model, hw: Hardware, batch: PlanBatch) -> FloatArray:
    """Ring attention: every rank receives the other ``cp-1`` K/V chunks of its TP shard."""
    sequence = (batch.micro_batch * batch.seq_len).astype(np.float64)
    if model.mla is None:
        message = sequence * 2.0 * model.kv_size / batch.tp * ACTIVATION_BYTES
    else:
        # MLA exchanges the compressed latent (shared by all heads, so not split by TP).
        latent = model.mla.kv_lora_rank + model.mla.qk_rope_head_dim
        message = sequence * latent * ACTIVATION_BYTES
    phases = coll.decompose(hw.system, batch.cp, batch.tp)
    calls = (batch.cp - 1.0) * hw.efficiency.collective_overhead_s
    result: FloatArray = np.where(batch.cp > 1, coll.all_gather_time(phases, message) + calls, 0.0)
    return result


def _ep_comm_forward(model: Model, hw: Hardware, batch: PlanBatch) -> FloatArray:
    """MoE token dispatch and combine of one layer's forward: two all-to-alls over the EP group
    (size ep, stride etp: expert-TP innermost in the folded MoE placement) on the system's tiers,
    the busiest rank receiving (and returning) :func:`moe_imbalance` times the mean.

    With ``ep_dedup`` (DeepEP's normal kernels, github.com/deepseek-ai/DeepEP; Megatron-Core's
    flex dispatcher with DeepEP or HybridEP; DeepSeek-V3 report arXiv:2412.19437 section 3.2.2)
    a token crosses each tier once per destination domain that holds one of its experts (with
    group-limited routing, DeepSeek-V3's at most 4 of 8 node groups, fewer) and is
    forwarded inside it (:func:`~clusterplan.costs.collectives.expert_all_to_all_time`, the
    formula serving uses); the dispatch is fp8 with one fp32 scale per 128 channels in fp8/fp4
    plans (section 3.3: activations are quantised before dispatch), the combine bf16. Without
    it, every one of the ``top_k`` routed copies goes to its expert's chip in bf16."""
    if model.moe is None:
        return np.zeros(len(batch))
    moe, h = model.moe, model.hidden_size
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    local_tokens = tokens / batch.tp
    imbalance = moe_imbalance(model, batch)
    phases = coll.decompose(hw.system, batch.ep, batch.etp)
    combine_bytes = h * ACTIVATION_BYTES
    dispatch_bytes = np.where(batch.precision >= 2, coll.fp8_token_bytes(h), combine_bytes)

    def one(dedup: bool, token_bytes: Any) -> FloatArray:
        return coll.expert_all_to_all_time(phases, local_tokens, token_bytes, moe.experts, moe.top_k, dedup, imbalance,
                                           moe.expert_groups, moe.groups_per_token)

    # The flat dispatch and combine move the same bf16 bytes: one all-to-all, twice. The
    # de-duplicated pair is computed only when some plan asks for it (searches time millions).
    moved = 2.0 * one(False, combine_bytes)
    if np.any(batch.ep_dedup == 1):
        moved = np.where(batch.ep_dedup == 1, one(True, dispatch_bytes) + one(True, combine_bytes), moved)
    per_moe_layer = moved + 2.0 * hw.efficiency.collective_overhead_s
    result: FloatArray = np.where(batch.ep > 1, per_moe_layer * model.moe_layers / model.layers, 0.0)
    return result


def _lm_head(model: Model, hw: Hardware, batch: PlanBatch) -> tuple[FloatArray, FloatArray]:
    """Forward and backward time of the LM head and cross-entropy on the last stage.

    The head stays in bf16 under fp8/fp4 training: low-precision recipes apply to the linear
    layers inside the transformer blocks only (Megatron-Bridge docs/performance-guide.md, "Low
    Precision Training"; Megatron-Core's ``output_layer`` is a ``ColumnParallelLinear``, not a
    Transformer Engine module, so ``fp8_autocast`` leaves it alone).
    """
    eff = hw.efficiency
    tp = batch.tp.astype(np.float64)
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    precision = np.minimum(batch.precision, 1)
    head = gemm_time(tokens, model.vocab_size / tp, model.hidden_size, hw.peak[precision],
                     hw.matmul_eff[precision], OPERAND_BYTES[precision],
                     hw.chip.hbm_bandwidth, eff.hbm, eff.kernel_overhead_s, eff.matmul_dim_half)
    # Cross-entropy over fp32 logits: a few passes (max, exp-sum, gradient) of tokens x V/t.
    loss = memory_time(3 * 4.0 * tokens * model.vocab_size / tp, hw.chip.hbm_bandwidth, eff.hbm)
    return head + loss, 2.0 * head + loss


#: Megatron-Core DDP's default gradient bucket, in parameters: ``max(40000000, 1000000 *
#: dp_size)`` ("make buckets larger to ensure that chunks used in NCCL ring-reduce
#: implementations are large enough to remain bandwidth-bound rather than latency-bound";
#: megatron/core/distributed/distributed_data_parallel.py, DistributedDataParallel.__init__;
#: Megatron-Bridge sizes it on the dp x cp group).
BUCKET_FLOOR_PARAMS = 40e6
BUCKET_PARAMS_PER_REPLICA = 1e6


def edge_bucket_share(replicas: Any, stage_params: Any) -> FloatArray:
    """Share of a chip's parameters in one data-parallel bucket: the last gradient bucket, whose
    reduction cannot start before backward ends, and (ZeRO >= 1) the first parameter bucket,
    gathered before forward can start.

    Megatron-Core's default bucket holds ``max(40M, 1M x dp)`` parameters, so the exposed edge
    grows with the data-parallel width: at dp = 512 a bucket is 512M parameters, about 2.3
    Llama-3-8B layers, and a step without gradient accumulation cannot hide it. Other stacks'
    overlap granularity (XLA's per-layer collectives, NeuronX Distributed) is taken to be the
    same: an assumption, not a measurement."""
    bucket = np.maximum(BUCKET_FLOOR_PARAMS, BUCKET_PARAMS_PER_REPLICA * np.asarray(replicas, dtype=np.float64))
    result: FloatArray = np.minimum(1.0, bucket / np.maximum(np.asarray(stage_params, dtype=np.float64), 1.0))
    return result


def zero3_unit_exposure(gather: Any, reduce: Any, forward: Any, backward: Any, units: Any,
                        share: float = 0.0) -> FloatArray:
    """Exposed ZeRO-3 / FSDP communication of one micro-batch on one pipeline stage.

    Parameters are sharded by unit (a layer); before a unit runs, its parameters are all-gathered
    (``gather``: each rank receives the whole unit, however many ranks share it) and freed after
    it, so forward and backward (with any recompute) each gather every unit again, every
    micro-batch; backward also reduce-scatters each unit's gradients (``reduce``). Prefetching
    issues the next unit's gather while the current unit computes (ZeRO, Rajbhandari et al.
    2020; FSDP's backward and forward prefetch, Zhao et al. 2023), so per unit only what outlasts
    the compute is exposed: ``max(0, gather - forward)`` forward and ``max(0, gather + reduce -
    backward)`` backward (the reduce-scatter of the previous unit shares the links with the
    next gather). The first unit's gather of each pass and the last reduce-scatter have nothing
    to hide behind. A small micro-batch shrinks the per-unit compute but not the gathers.
    ``share``: the compute the hidden transfers take from the units they overlap
    (:func:`~clusterplan.costs.collectives.overlapped_exposure`).
    """
    steady = (coll.overlapped_exposure(gather, forward, share)
              + coll.overlapped_exposure(np.asarray(gather) + reduce, backward, share))
    result: FloatArray = 2.0 * np.asarray(gather) + reduce + (np.asarray(units) - 1.0) * steady
    return result


def estimate(model: Model, hw: Hardware, batch: PlanBatch) -> StepEstimate:
    """Step time, its breakdown, memory and throughput for every plan in ``batch``."""
    eff = hw.efficiency
    tp = batch.tp.astype(np.float64)
    pp = batch.pp.astype(np.float64)
    vp = batch.vp.astype(np.float64)
    micro_batches = batch.micro_batches.astype(np.float64)

    parts = _layer_forward(model, hw, batch)
    permutation = parts["moe_permutation"]
    compute_f = parts["gemm"] + parts["attention"] + parts["elementwise"] + permutation
    attention_core = parts["attention"]
    flash_bwd = np.where(batch.flash == 1, FLASH_BACKWARD_FACTOR, 2.0)
    compute_b = (2.0 * parts["gemm"] + flash_bwd * attention_core + 2.0 * parts["elementwise"]
                 + permutation)
    # Recomputation re-runs forward work inside backward: all of it (full), or the selected
    # modules (selective; Megatron --recompute-modules).
    selective = (np.where(batch.recomputes("core_attn"), attention_core, 0.0)
                 + np.where(batch.recomputes("layernorm"), parts["norms"], 0.0)
                 + np.where(batch.recomputes("moe_act"), parts["moe_activation"], 0.0))
    # Megatron-Core's module checkpoints re-run their module's whole forward from its kept input
    # (a MoE layer's includes its shared experts, so those are not re-run twice).
    rerun_moe = batch.recomputes("moe")
    selective = selective + (np.where(batch.recomputes("mla_up_proj"), parts["mla_up_proj"], 0.0)
                             + np.where(batch.recomputes("mlp"), parts["dense_ffn"], 0.0)
                             + np.where(rerun_moe, parts["moe_ffn"] + permutation, 0.0)
                             + np.where(batch.recomputes("shared_experts") & ~rerun_moe, parts["shared_experts"], 0.0))
    # Re-run FFNs repeat their TP collectives (an all-gather and a reduce-scatter with SP, half
    # of a layer's) on their share of the layers; a re-run MoE layer its EP all-to-alls.
    ffn_rerun_share = (np.where(batch.recomputes("mlp"), model.dense_ffn_layers / model.layers, 0.0)
                       + np.where(rerun_moe, model.moe_layers / model.layers, 0.0))
    # Full recompute re-runs the whole forward, less the Q/K/V projections where their outputs
    # were kept in host memory (MaxText 'qkv_proj_offloaded'; the transfers overlap compute).
    full = compute_f - np.where(batch.offload_qkv == 1, parts["qkv"], 0.0)
    recompute = np.where(batch.recompute == 2, full, selective)

    tp_f = _tp_comm_forward(model, hw, batch)
    # fwd, bwd (+ recomputed fwd, or the re-run FFNs' half of it)
    tp_total = tp_f * (2.0 + (batch.recompute == 2) + 0.5 * ffn_rerun_share)
    gemm_cover = parts["gemm"] * (3.0 + (batch.recompute == 2))
    # Overlapped communication holds some of the compute units while it runs (SM sharing).
    share = coll.overlap_compute_share(hw.chip.compute_units)
    tp_share = coll.overlap_compute_share(hw.chip.compute_units, coll.TP_OVERLAP_UNITS)
    tp_exposed = np.where(batch.overlap_tp == 1, coll.overlapped_exposure(tp_total, gemm_cover, tp_share),
                          tp_total)
    cp_f = _cp_comm_forward(model, hw, batch)
    # Ring attention overlaps each K/V hop with the attention block of the previous one.
    cp_exposed = (coll.overlapped_exposure(cp_f, attention_core, share)
                  + coll.overlapped_exposure(2.0 * cp_f, flash_bwd * attention_core, share))
    layer_compute = compute_f + compute_b + recompute
    ep_total = (2.0 + (batch.recompute == 2) + rerun_moe) * _ep_comm_forward(model, hw, batch)
    # DualPipe-style schedules run one micro-batch's all-to-alls under another's compute.
    ep_exposed = np.where(batch.overlap_ep == 1, coll.overlapped_exposure(ep_total, layer_compute, share),
                          ep_total)

    layer_time = layer_compute + tp_exposed + cp_exposed + ep_exposed
    head_f, head_b = _lm_head(model, hw, batch)
    # The last stage's extra work: LM head and loss, and each multi-token-prediction module
    # (one more layer and LM head, DeepSeek-V3 section 2.2).
    head = head_f + head_b + batch.mtp * (layer_time + head_f + head_b)

    first = batch.layers_first * layer_time
    last = batch.layers_last * layer_time + head
    middle = batch.layers_middle * layer_time
    single = batch.pp == 1
    stage_max = np.where(single, first + head, np.maximum(np.maximum(first, last), middle))
    stage_mean = np.where(single, first + head,
                          (first + last + np.maximum(pp - 2.0, 0.0) * middle) / pp)
    bottleneck_layers = np.where(single, batch.layers_first,
                                 np.where(last >= np.maximum(first, middle), batch.layers_last,
                                          np.where(first >= middle, batch.layers_first,
                                                   batch.layers_middle))).astype(np.float64)
    head_on_bottleneck = np.where(single | (last >= np.maximum(first, middle)), head, 0.0)

    bubble = (pp - 1.0) / vp * stage_mean

    # Pipeline point-to-point: one activation per chunk boundary, forward and backward.
    tokens = (batch.micro_batch * batch.seq_len / batch.cp).astype(np.float64)
    p2p_bytes = tokens * model.hidden_size * ACTIVATION_BYTES / tp  # scatter-gather over TP
    p2p = coll.p2p_time(hw.system, batch.tp * batch.cp * batch.dp, p2p_bytes) + eff.collective_overhead_s
    chunk = stage_max / vp
    # The interleaved schedule can overlap sends with the next chunk's compute (Megatron-Core
    # --overlap-p2p-communication); 1F1B and older Megatron block on each send.
    p2p_each = np.where((batch.vp > 1) & (batch.overlap_pp == 1), coll.overlapped_exposure(p2p, chunk, share),
                        p2p)
    pp_exposed = np.where(single, 0.0, 2.0 * (micro_batches * vp + pp - 1.0) * p2p_each)

    # Data parallelism: gradients (and, ZeRO>=1, parameters) of this chip's stage. Dense
    # parameters reduce over the dp*cp replicas (stride tp); routed experts over their expert
    # data-parallel replicas (stride ep*etp, MoE parallel folding).
    params = mem.stage_params(model, batch)
    expert_params = params.worst_experts
    dense_params = params.worst - expert_params
    replicas = batch.dp * batch.cp
    shard = batch.dp_shard
    expert_replicas = mem.expert_data_parallel(batch)
    groups = [(dense_params, coll.decompose(hw.system, shard, batch.tp))]
    if model.moe is not None:
        groups.append((expert_params,
                       coll.decompose(hw.system, np.maximum(expert_replicas, 1.0), batch.ep * batch.etp)))
    grad_comm = np.zeros(len(batch))
    gather_comm = np.zeros(len(batch))
    zero3_gather = np.zeros(len(batch))
    zero3_reduce = np.zeros(len(batch))
    for group_params, phases in groups:
        if not np.any(group_params > 0):  # e.g. the expert group of a dense model
            continue
        # An all-reduce is a reduce-scatter and an all-gather; an all-gather mirrors a reduce-scatter.
        grads = coll.reduce_scatter_time(phases, group_params * batch.grad_reduce_bytes)
        weights = coll.all_gather_time(phases, group_params * mem.WEIGHT_BYTES)
        grad_comm = grad_comm + np.where(batch.zero == 0, coll.all_reduce_time(
            phases, group_params * batch.grad_reduce_bytes), grads)
        gather_comm = gather_comm + np.where(batch.zero >= 1, weights, 0.0)
        # ZeRO-3 gathers weights for forward and again for backward and reduce-scatters gradients
        # every micro-batch (zero3_unit_exposure).
        zero3_gather = zero3_gather + weights
        zero3_reduce = zero3_reduce + grads
    # Hybrid sharding: dense shards are further all-reduced across the replica groups.
    replica_phases = coll.decompose(hw.system, replicas // shard, batch.tp * shard)
    cross_replica = np.where(replicas > shard, coll.all_reduce_time(
        replica_phases, dense_params * batch.grad_reduce_bytes / shard), 0.0)
    grad_comm = grad_comm + cross_replica
    stage_layers = np.maximum(bottleneck_layers, 1.0)
    backward_last = bottleneck_layers * (compute_b + recompute)
    # Buckets reduce while backward proceeds: what backward cannot cover, and the last bucket
    # (whose gradients are ready only when backward ends), stay exposed; with ZeRO >= 1 the
    # first bucket's parameters are gathered before forward can start, the rest under it.
    edge = edge_bucket_share(replicas, params.worst)
    grad_exposed = np.where(
        batch.overlap_dp == 1,
        grad_comm * edge + coll.overlapped_exposure(grad_comm * (1.0 - edge), backward_last * (1.0 - edge), share),
        grad_comm,
    )
    forward_first = bottleneck_layers * compute_f
    gather_exposed = np.where(
        batch.overlap_dp == 1,
        gather_comm * edge + coll.overlapped_exposure(gather_comm * (1.0 - edge), forward_first * (1.0 - edge), share),
        gather_comm,
    )
    # ZeRO-3 / FSDP: the stage's layers are the sharding units; every micro-batch gathers each
    # unit's parameters under the previous unit's compute (zero3_unit_exposure).
    zero3_per_micro_batch = np.where(
        batch.overlap_dp == 1,
        zero3_unit_exposure(zero3_gather / stage_layers, zero3_reduce / stage_layers, compute_f,
                            compute_b + recompute, stage_layers, share),
        2.0 * zero3_gather + zero3_reduce)
    cross_replica_exposed = np.where(
        batch.overlap_dp == 1,
        cross_replica / stage_layers + coll.overlapped_exposure(
            cross_replica * (stage_layers - 1.0) / stage_layers, backward_last, share),
        cross_replica)
    has_experts = expert_params > 0
    data_parallel = (replicas > 1) | (has_experts & (expert_replicas > 1))
    zero3 = data_parallel & (batch.zero >= 3)
    zero3_exposed = np.where(zero3, micro_batches * zero3_per_micro_batch, 0.0)
    dp_exposed = np.where(data_parallel,
                          np.where(batch.zero >= 3, cross_replica_exposed, grad_exposed + gather_exposed),
                          0.0)

    # Optimizer: Adam over this chip's shard of the parameters, memory-bound.
    optimizer_params = np.where(batch.zero >= 1,
                                dense_params / shard + expert_params / np.maximum(expert_replicas, 1.0),
                                params.worst)
    adam_traffic = ADAM_GRAD_AND_WEIGHT_BYTES + 2.0 * batch.optimizer_bytes
    optimizer = (memory_time(optimizer_params * adam_traffic, hw.chip.hbm_bandwidth, eff.hbm)
                 + 20 * eff.kernel_overhead_s)

    compute_total = micro_batches * (bottleneck_layers * layer_compute + head_on_bottleneck)
    tp_time = micro_batches * bottleneck_layers * tp_exposed
    cp_time = micro_batches * bottleneck_layers * cp_exposed
    ep_time = micro_batches * bottleneck_layers * ep_exposed
    step = (compute_total + tp_time + cp_time + ep_time + bubble + pp_exposed + dp_exposed + zero3_exposed
            + optimizer)

    time_breakdown = {
        "compute": compute_total, "tp_comm": tp_time, "cp_comm": cp_time, "ep_comm": ep_time,
        "pp_bubble": bubble, "pp_comm": pp_exposed, "dp_comm": dp_exposed, "zero3_comm": zero3_exposed,
        "optimizer": optimizer,
    }

    memory_breakdown = mem.memory_breakdown(model, batch, eff.reserved_bytes, params)
    memory_total = sum(memory_breakdown.values())

    tokens_per_step = (batch.global_batch * batch.seq_len).astype(np.float64)
    chips = batch.chips.astype(np.float64)
    tokens_per_s_per_chip = tokens_per_step / step / chips
    model_flops = fl.model_flops_per_token(model, batch.seq_len) * tokens_per_s_per_chip
    module_flops = fl.checkpointed_module_flops(model)
    rerun_flops = (np.where(batch.recomputes("mla_up_proj"), module_flops["mla_up_proj"], 0.0)
                   + np.where(batch.recomputes("mlp"), module_flops["mlp"], 0.0)
                   + np.where(rerun_moe, module_flops["moe"], 0.0)
                   + np.where(batch.recomputes("shared_experts") & ~rerun_moe, module_flops["shared_experts"], 0.0))
    hardware_flops = (fl.hardware_flops_per_token(model, batch.seq_len, batch.recompute, batch.mtp,
                                                  batch.recomputes("core_attn"), batch.offload_qkv, rerun_flops)
                      * tokens_per_s_per_chip)
    peak = hw.rated_peak[batch.precision]
    return StepEstimate(
        step_time=step,
        time_breakdown=time_breakdown,
        memory_breakdown=memory_breakdown,
        memory=np.asarray(memory_total, dtype=np.float64),
        fits=np.asarray(memory_total <= hw.chip.hbm_bytes),
        tokens_per_step=tokens_per_step,
        tokens_per_s_per_chip=tokens_per_s_per_chip,
        model_flops_per_s_per_chip=model_flops,
        mfu=model_flops / peak,
        hfu=hardware_flops / peak,
    )
