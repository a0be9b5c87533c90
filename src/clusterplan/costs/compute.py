"""Kernel time on one chip: roofline with fitted, physical efficiencies.

A kernel's time is the larger of its compute time (FLOPs over the achievable fraction of dense
peak) and its memory time (bytes over the achievable fraction of HBM bandwidth), plus a fixed
per-kernel cost (launch and tail effects). The efficiencies are per chip family and fitted on
published runs by ``clusterplan calibrate`` (see ``catalog/efficiency.yaml``); they are the only
tuned numbers in the time model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator

from clusterplan.specs._base import Bytes, Seconds, Spec
from clusterplan.specs.chip import PRECISIONS, Chip

FloatArray = NDArray[np.float64]

#: Bytes per element of a matmul operand at each plan precision (fp32, bf16, fp8, fp4).
OPERAND_BYTES = np.array([4.0, 2.0, 1.0, 0.5])


class Efficiency(Spec):
    """Physical efficiencies of one chip family's kernels (fractions of peak, in (0, 1])."""

    family: str
    matmul: dict[str, float] = Field(description="large-GEMM fraction of dense peak, per precision")
    attention: float = Field(gt=0, le=1, description="fused (flash) attention fraction of bf16 peak")
    hbm: float = Field(gt=0, le=1, description="fraction of HBM bandwidth for memory-bound kernels")
    matmul_dim_half: float = Field(
        default=0.0, ge=0,
        description="GEMM dimension at which tiling/wave quantisation halves efficiency (elements)")
    kernel_overhead_s: Seconds = Field(ge=0, description="fixed cost per kernel (launch, tail)")
    grouped_matmul: float = Field(
        default=1.0, gt=0, le=1,
        description="MoE grouped-GEMM efficiency relative to `matmul` (ragged per-expert shapes)")
    moe_layer_overhead_s: Seconds = Field(
        default=0.0, ge=0,
        description="fixed cost per MoE layer and pass: routing, dispatch sync, host-device syncs")
    expert_gemm_overhead_s: Seconds = Field(
        default=0.0, ge=0,
        description="training's fixed cost per local expert and grouped GEMM: Transformer Engine's "
        "grouped GEMM issues one cuBLAS GEMM per expert (multi-stream)")
    inference_hbm: float = Field(
        default=0.8, gt=0, le=1, description="HBM bandwidth fraction reached by decode steps (weights + KV)")
    inference_step_overhead_s: Seconds = Field(
        default=0.0, ge=0, description="fixed serving-engine cost per step: scheduling, sampling, launch")
    serving_request_latency_s: Seconds = Field(
        default=0.0, ge=0, description="per-request latency outside the engine's steps (API server, "
        "tokenisation, detokenising and streaming the first token): added to TTFT and end-to-end latency")
    collective_overhead_s: Seconds = Field(
        default=0.0, ge=0, description="fixed software cost per collective call (launch, sync)")
    reserved_bytes: Bytes = Field(ge=0, description="runtime, communicator and allocator reserve")
    scale_up_collectives: float = Field(
        default=1.0, gt=0, le=2,
        description="multiplier on the catalog efficiency of bounded (scale-up) tiers, capped at 1")
    scale_out_collectives: float = Field(
        default=1.0, gt=0, le=2,
        description="multiplier on the catalog efficiency of the scale-out tier, capped at 1")
    sustained_clock: dict[str, float] = Field(
        default_factory=dict,
        description="per chip of the family: the fraction of its datasheet peak its tensor units sustain "
        "under its power limit (the fitted clock ratio; 1.0, the datasheet's, where absent)")
    fitted_on: list[str] = Field(default_factory=list)
    note: str = ""

    @field_validator("sustained_clock")
    @classmethod
    def _plausible_clock(cls, value: dict[str, float]) -> dict[str, float]:
        for chip, ratio in value.items():
            if not 0.5 <= ratio <= 1.5:
                raise ValueError(f"sustained_clock.{chip} must be in [0.5, 1.5] (got {ratio})")
        return value

    def sustained_for(self, chip: str) -> float:
        """The chip's sustained-clock ratio (1.0: its datasheet peak, where none was fitted)."""
        return self.sustained_clock.get(chip, 1.0)

    def matmul_for(self, precision: str) -> float:
        """Efficiency at a precision; a precision without its own fit uses the nearest wider one."""
        order = PRECISIONS[PRECISIONS.index(precision):: -1]
        for candidate in order:
            if candidate in self.matmul:
                return self.matmul[candidate]
        return self.matmul["bf16"]


def peak_by_precision(chip: Chip) -> FloatArray:
    """Dense peak FLOP/s indexed by precision code (0 fp32, 1 bf16, 2 fp8, 3 fp4)."""
    return np.array([chip.peak(p) if p != "fp32" else chip.peak_flops.get("fp32", chip.peak("bf16") / 16)
                     for p in PRECISIONS])


def matmul_eff_by_precision(eff: Efficiency) -> FloatArray:
    return np.array([eff.matmul_for(p) for p in PRECISIONS])


def grouped_gemm_time(
    m: Any, groups: Any, n: Any, k: Any, peak: Any, matmul_eff: Any, operand_bytes: Any,
    hbm_bandwidth: float, hbm_eff: float, overhead_s: float, dim_half: float = 0.0,
) -> FloatArray:
    """Time of ``groups`` GEMMs [m/groups, k] @ [k, n] in one kernel (MoE experts; groups=1 is a
    plain GEMM): max(compute, memory) + one fixed cost.

    Compute runs at ``matmul_eff`` of peak for large shapes and loses efficiency on small
    dimensions (partial tiles, idle systolic-array rows, wave quantisation): each dimension d
    (the per-group row count for m) contributes a factor d / (d + dim_half). Memory traffic: the
    activations and every group's weights at the plan precision and a bf16 output, read or
    written once (tiling keeps re-reads in on-chip SRAM).
    """
    rows = m / groups
    flops = 2.0 * m * n * k
    shape = (rows / (rows + dim_half)) * (n / (n + dim_half)) * (k / (k + dim_half))
    traffic = operand_bytes * (m * k + groups * k * n) + 2.0 * m * n
    result: FloatArray = np.maximum(flops / (peak * matmul_eff * shape),
                                    traffic / (hbm_bandwidth * hbm_eff))
    return result + overhead_s


def gemm_time(
    m: Any, n: Any, k: Any, peak: Any, matmul_eff: Any, operand_bytes: Any,
    hbm_bandwidth: float, hbm_eff: float, overhead_s: float, dim_half: float = 0.0,
) -> FloatArray:
    """Time of C[m,n] = A[m,k] @ B[k,n] (:func:`grouped_gemm_time` with one group)."""
    return grouped_gemm_time(m, 1.0, n, k, peak, matmul_eff, operand_bytes, hbm_bandwidth, hbm_eff,
                             overhead_s, dim_half)


#: Head dimension of every run the fused-attention efficiency (``Efficiency.attention``) is quoted at.
ATTENTION_REFERENCE_HEAD_DIM = 128.0


def attention_head_dim_factor(qk_head_dim: Any, v_head_dim: Any, dim_half: float) -> Any:
    """Fused attention's efficiency at these head dimensions relative to head dimension 128.

    A flash-attention tile does two GEMMs per block of scores, QK^T contracting over the QK head
    dimension and PV producing the V head dimension, while its softmax work per score is fixed;
    so a smaller head dimension does fewer FLOPs per score at the same exponentials, loads and
    synchronisation. That is the small-dimension loss of :func:`grouped_gemm_time`,
    ``d / (d + dim_half)`` with the family's fitted ``matmul_dim_half``, here applied to the two
    GEMMs' FLOP-weighted mean and normalised at 128. With Hopper's fitted ``dim_half`` (72.6)
    head dimension 64 runs at 0.73 x the rate of 128 and 256 at 1.22 x; FlashAttention-3's H100
    BF16 forward benchmarks (Shah et al. 2024, arXiv:2407.08608, "attention forward speed"
    figures, 4k-16k tokens) measure 0.75-0.77 (FA3, 476-497 vs 638-648 TFLOP/s) and 0.67-0.69
    (cuDNN, 408-413 vs 595-609) for 64 vs 128, and 1.17 (FA3, 756 vs 648) for 256 vs 128."""
    if dim_half <= 0:
        return np.ones_like(np.asarray(qk_head_dim, dtype=np.float64))
    qk = np.asarray(qk_head_dim, dtype=np.float64)
    v = np.asarray(v_head_dim, dtype=np.float64)
    rate = (qk * qk / (qk + dim_half) + v * v / (v + dim_half)) / (qk + v)  # FLOP-weighted d/(d+h)
    reference = ATTENTION_REFERENCE_HEAD_DIM / (ATTENTION_REFERENCE_HEAD_DIM + dim_half)
    return rate / reference


#: Key span (tokens) at which causal fused attention reaches half its long-sequence rate.
#: FlashAttention-3's causal
#: BF16 forward on H100 (Shah et al. 2024, arXiv:2407.08608, section 4.1 figures; the curves in
#: catalog/kernels.yaml) follows ``e * s / (s + s_half)`` within 5 % from 512 to 16k tokens with
#: s_half 822, 603 and 685 tokens at head dimensions 64, 128 and 256 (their mean, 700, here;
#: tests/test_kernels_catalog.py refits it from the catalog): short spans leave more of the work in
#: partially masked diagonal blocks and in the per-block softmax rescaling and pipeline fill.
ATTENTION_SPAN_HALF = 700.0


#: Sequence lengths of the long-sequence plateau that a family's attention anchor averages
#: (``costs/attention.RATE_MIN_SEQ`` and up: the FlashAttention-2 and -3 papers' curves at 4k, 8k
#: and 16k tokens; ``calibrate.kernel_anchors``).
ATTENTION_PLATEAU_SPANS = (4096.0, 8192.0, 16384.0)


def attention_span_factor(span: Any) -> FloatArray:
    """Fused causal attention's rate at key span ``span`` (tokens a query block attends over:
    the sequence, its context-parallel chunk, or a sliding window) as a fraction of its
    asymptotic rate, ``s/(s + s_half)`` (:data:`ATTENTION_SPAN_HALF`); the step model takes it
    relative to the measured plateau (:func:`attention_plateau_rate`): 2k against 8k tokens 0.81,
    a 128-token window against 4k tokens 0.18."""
    s = np.maximum(np.asarray(span, dtype=np.float64), 1.0)
    result: FloatArray = s / (s + ATTENTION_SPAN_HALF)
    return result


def attention_plateau_rate(span: Any) -> FloatArray:
    """Fused causal attention's rate at key span ``span`` relative to the long-sequence plateau
    the family's attention efficiency is measured as (:data:`ATTENTION_PLATEAU_SPANS`): the span
    curve over its mean on the plateau's points, 0.82 at 2k tokens, 0.94 at 4k, 1.01 at 8k, 1.09
    at 128k. One normalisation for every family: B200's curves also measure 32k tokens, which
    would raise its plateau's mean 2 %; TPU and Trainium attention is fitted, and the fitted
    level absorbs the normalisation."""
    result: FloatArray = attention_span_factor(span) / _PLATEAU_SPAN_FACTOR
    return result


#: The span curve's mean over the plateau's points (0.911), the normalisation above.
_PLATEAU_SPAN_FACTOR = float(np.mean(attention_span_factor(np.array(ATTENTION_PLATEAU_SPANS))))


def permutation_bytes(routed_rows: Any, hidden_size: float, passes: Any, element_bytes: float = 2.0) -> FloatArray:
    """HBM bytes of ``passes`` MoE token permutations over ``routed_rows`` routed token copies:
    each pass (a permute into per-expert order, its inverse, a sort of received chunks) reads and
    writes every copy's hidden state once. Megatron-Core's dispatchers run 2 or 4 such passes a
    direction (``training.step.moe_permutation_forward``); serving engines' fused MoE kernels
    expand the rows before the expert GEMMs and gather-reduce them after (TensorRT-LLM's
    ``expandInputRows`` and ``finalizeMoeRouting`` kernels): 2."""
    result: FloatArray = np.asarray(passes, dtype=np.float64) * 2.0 * routed_rows * hidden_size * element_bytes
    return result


def memory_time(traffic_bytes: Any, hbm_bandwidth: float, hbm_eff: float) -> FloatArray:
    """Time of memory-bound (elementwise, normalisation, optimizer) kernels."""
    result: FloatArray = np.asarray(traffic_bytes, dtype=np.float64) / (hbm_bandwidth * hbm_eff)
    return result
