"""Inference step estimator: prefill and decode steps of one serving replica, vectorised.

A replica of ``attention_dp * tp * pp`` chips holds the weights (sharded by TP and PP; with
attention DP the routed experts over all of a stage's chips) and a KV cache in the remaining
HBM. A step runs its new tokens (one per decoding sequence, plus any prompt tokens) through
every layer; its time is the *sum* of its kernels, each bound by its own resource (roofline per
kernel, Williams et al. 2009), because the kernels of one step run one after the other: a
step's large-batch GEMMs are compute-bound while its attention is KV-read bound, so
``max(total compute, total memory)`` under-counts it.

* GEMMs (QKV, output projection, FFN, MoE experts, LM head) use the training estimator's
  shape-aware roofline (:func:`clusterplan.costs.compute.grouped_gemm_time`: fitted large-GEMM
  efficiency, the ``matmul_dim_half`` small-dimension loss at ``N/tp`` and small batches, one
  ``kernel_overhead_s`` per kernel) with the serving HBM efficiency ``inference_hbm``: at small
  batches they are weight-read bound (every weight read once per step). The input embedding is
  a gather (not read in full); the LM head runs on one row per sequence (the last token).
* Attention: max(attention FLOPs at the fused-attention efficiency, K/V cache read). The fused
  attention computes in the KV cache's precision: an fp8 cache runs FP8 tensor-core attention
  (TensorRT-LLM's FP8 context FMHA, which ``trtllm-bench build`` enables with FP8 quantization;
  FlashAttention-3 FP8, Shah et al. 2024), so its FLOPs go at the fp8 peak.
* Quantised weights (fp8, fp4) are the transformer blocks' linear layers; the input embedding
  and the LM head stay bf16 (NVIDIA ModelOpt PTQ excludes ``lm_head`` and quantises only
  ``Linear`` layers, as the published ``nvidia/*-FP8`` checkpoints list in
  ``hf_quant_config.json``): they count 2 bytes per weight in memory and the LM head GEMM runs
  at bf16. The MoE router stays bf16 in every format, and an fp4 MLA model keeps its latent
  projections bf16 (:func:`projection_format`).
* Decode attention of an MLA model runs the weight-absorbed form at FlashMLA's measured rate
  (:data:`MLA_DECODE_FRACTION` of the bf16 peak), whatever the KV cache's format.
* Memory-bound elementwise kernels, as the training estimator counts them
  (:mod:`clusterplan.training.step`): per layer and token, two norms (2h read and written) and
  two residual adds (3h) on the full hidden state, which every TP rank holds after its
  all-reduce (serving engines run no sequence parallelism), plus rope on q and k and the FFN
  activation (3x the FFN width for SwiGLU) on the rank's shard; bf16 activations, at the
  serving HBM efficiency. Serving FP8 uses static scales quantised inside these kernels, so
  there is no separate cast pass (training's delayed-scaling casts are not counted). Their
  launch costs stay in the per-GEMM ``kernel_overhead_s``, fitted that way on training rows.
* TP: two all-reduces of ``tokens x hidden`` bf16 activations per layer (Shoeybi et al. 2019),
  not overlapped with compute (they sit between dependent GEMMs); PP: one hop per stage boundary.
* PP: a step is one micro-batch's pass through the ``pp`` stages in turn, so its time is ``pp``
  times a stage's (every chip holds ``1/pp`` of the layers), and the replica keeps ``pp``
  micro-batches in flight, as TensorRT-LLM and vLLM run pipeline parallelism. A PP replica is
  therefore ``engines = pp`` engines, each with ``1/pp`` of the KV cache, whose steps interleave
  on the stages; the simulator serves them as ``pp`` members of the fleet. This is exact while
  the engines' batches are balanced (a bigger batch on one engine would slow the others' stages).
* Attention data parallelism (MoE models; SGLang's DP attention, TensorRT-LLM's
  ``enable_attention_dp``; DeepSeek-V3 report arXiv:2412.19437 section 3.4): each stage holds
  ``attention_dp`` ranks of ``tp`` chips; every rank holds the attention, dense and shared-expert
  weights (sharded by ``tp`` only) and the K/V of its *own* sequences (an MLA latent whole, once
  per sequence instead of once per TP rank), and the routed experts are spread over the stage's
  ``attention_dp * tp`` chips (``ep`` ranks of ``attention_dp * tp / ep`` chips each). Each rank
  is an engine (like a pipeline micro-batch: ``engines = pp * attention_dp``) with its own batch
  and KV cache; the ranks synchronise at every MoE layer, so a step is timed for one rank with
  every rank carrying the same tokens (balanced ranks, as the engines' attention-DP balancing
  aims for) and the busiest EP rank setting the pace: its expected routed load is the expected
  maximum over ``ep`` ranks (:func:`expected_max_rank_load`), with the routing skew of the served
  checkpoint (``Deployment.routing_gini``). Each MoE layer adds a dispatch and
  a combine all-to-all over the EP group on the system's tiers, de-duplicated per destination
  node and GPU (DeepEP), FP8 dispatch with fp8/fp4 weights, bf16 combine
  (:meth:`ReplicaModel.all_to_all_time`). Without attention DP every TP rank already holds the
  step's tokens and the TP all-reduce combines the experts' outputs: no all-to-all is charged.
* A fixed engine overhead per step (scheduling, sampling, launch).

``inference_hbm`` and the step overhead are fitted per chip family on published serving results
(``clusterplan calibrate``, serving stage); every other efficiency is the training fit. KV sizes
follow the attention type:
``2 * layers * kv_heads * head_dim`` values per token for MHA/GQA/MQA, the compressed latent for
MLA; fp8 KV halves them. Sliding-window layers (gpt-oss, Gemma 2/3) cache and read at most the
window of a sequence and attend to at most the window per query (:meth:`Model.kv_positions`,
:meth:`Model.attended_pairs`), so a step's attention and the analytic batch depend on each
sequence's length, not only on the step's totals: such a model has no separable step terms
(the simulator calls the step methods); the simulator reserves each request's KV as
``kv_positions(prompt + output)`` token-equivalents (:meth:`ReplicaModel.kv_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator

from clusterplan.costs import collectives as coll
from clusterplan.costs.compute import (
    OPERAND_BYTES,
    grouped_gemm_time,
    memory_time,
    permutation_bytes,
)
from clusterplan.errors import SpecError
from clusterplan.inference.engine import StepTerms
from clusterplan.inference.stacks import KV_BUDGET, apply_stack
from clusterplan.specs import Model
from clusterplan.specs._base import Spec
from clusterplan.specs.plan import ATTENTION_KERNEL_CODES, PRECISION_CODES, AttentionKernel
from clusterplan.training import flops as fl
from clusterplan.training import memory as mem
from clusterplan.training.batch import REAL_TEXT_ROUTING_GINI
from clusterplan.training.step import ACTIVATION_BYTES, Hardware, elementwise_widths, rank_share_cv

FloatArray = NDArray[np.float64]
KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}
#: bytes per channel of the MoE combine (bf16 in DeepEP's normal and low-latency modes)
COMBINE_BYTES = 2.0
#: Weight-absorbed MLA decode attention (each head's query against the cached 576-wide latent,
#: DeepSeek-V2 arXiv:2405.04434 section 2.1.3) at FlashMLA's measured compute-bound rate: 660
#: TFLOP/s on H800 SXM5, 0.667 of its 989 TFLOP/s dense bf16 peak (github.com/deepseek-ai/FlashMLA
#: README @ 066b5ba, "dense MLA decoding ... 660 TFLOPS in computation-bound configuration").
#: The kernel computes in bf16 with an fp8 cache too (it dequantises the cache: README, "FP8 KV
#: Cache"), and TensorRT-LLM's FP8 MQA gained 6 % end to end over bf16 at equal concurrency on
#: B200 (tech_blog/blog3, "FP8 KV Cache"), so every KV format runs at this share of the bf16
#: peak. Measured on Hopper; other families take the same share (an extrapolation).
MLA_DECODE_FRACTION = 660.0 / 989.0


class Deployment(Spec):
    """How one serving replica is laid out and configured."""

    tp: int = Field(default=1, ge=1, le=1024)
    pp: int = Field(default=1, ge=1, le=256)
    ep: int = Field(default=1, ge=1, le=1024)
    attention_dp: int = Field(
        default=1, ge=1, le=1024,
        description="MoE models: attention (and its KV cache) data-parallel over this many ranks of tp "
        "chips each, every rank on its own sequences; the routed experts expert-parallel over the stage's "
        "attention_dp x tp chips (chips = attention_dp x tp x pp)")
    weights: Literal["bf16", "fp8", "fp4"] = "bf16"
    kv_cache: Literal["bf16", "fp8"] = "bf16"
    max_batch: int = Field(default=2048, ge=1, le=1_000_000, description="engine limit on batched sequences")
    kv_memory_fraction: float = Field(
        default=0.9, gt=0, le=1,
        description="share of the HBM left after weights and runtime that the KV cache may take (with stack "
        "vllm or sglang: share of the whole HBM for weights, runtime and KV, as those engines define it)")
    prefill_buckets: tuple[int, ...] = Field(
        default=(), description="static-shape engines (AWS Neuron): prompt lengths compiled for context "
        "encoding; a whole prompt is padded to the smallest that holds it")
    decode_buckets: tuple[int, ...] = Field(
        default=(), description="static-shape engines: sequence lengths compiled for token generation; "
        "decode attention runs over the smallest that holds the context")
    frontend: Literal["server", "engine"] = Field(
        default="server",
        description="where latency is measured: behind an API server (the fitted per-request latency of "
        "server, tokenisation and streaming is added to TTFT, as in `vllm bench serve` or genai-perf) or "
        "at the engine (none added, as in `trtllm-bench` or an offline engine benchmark)")

    attention_kernel: AttentionKernel = Field(
        default="auto",
        description="the prompt's (prefill's) fused-attention library, at its measured rate relative to the "
        "family's reference (costs/attention.py): flash1 | flash2 | cudnn | flash3; auto: the reference "
        "(cudnn; flash2 on Ampere); decode attention keeps the reference rate")
    routing_gini: float = Field(
        default=REAL_TEXT_ROUTING_GINI, ge=0, lt=1,
        description="MoE with ep > 1: Gini coefficient of the per-expert token load of the served checkpoint "
        "on its traffic (0 = uniform routing; default 0.2, trained checkpoints routing real text, Ma et al. "
        "2026); the busiest EP rank sets each MoE layer's pace")
    stack: Literal["trtllm", "vllm", "sglang", "neuron"] | None = Field(
        default=None,
        description="serving engine whose documented defaults fill the fields not set here and fix what "
        "kv_memory_fraction means (inference/stacks.py); None: the defaults above, as before")

    @field_validator("prefill_buckets", "decode_buckets")
    @classmethod
    def _ascending(cls, buckets: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"buckets {list(buckets)} must be positive and strictly increasing")
        return buckets

    @property
    def chips(self) -> int:
        """The replica's chips: ``attention_dp x tp x pp`` (each pipeline stage holds
        ``attention_dp`` attention ranks of ``tp`` chips; its MoE layers run on all of them)."""
        return self.attention_dp * self.tp * self.pp

    def label(self) -> str:
        """``TP8 PP2 EP8``; with attention DP ``ADP8 TP1 EP8``."""
        parts = ([f"ADP{self.attention_dp}"] if self.attention_dp > 1 else []) + [f"TP{self.tp}"]
        return " ".join(parts + ([f"PP{self.pp}"] if self.pp > 1 else []) + ([f"EP{self.ep}"] if self.ep > 1 else []))

    def record(self) -> dict[str, Any]:
        """The fields for ``--json``; ``stack`` only when one is named (the output without a stack
        stays as before), ``routing_gini`` only with expert parallelism (the only layout it moves)."""
        exclude = ({"stack"} if self.stack is None else set()) | ({"routing_gini"} if self.ep == 1 else set())
        return self.model_dump(exclude=exclude or None)

    @property
    def moe_group(self) -> int:
        """Chips of one stage over which the routed experts are spread (EP x expert TP)."""
        return self.attention_dp * self.tp

    def validate_for(self, model: Model) -> Deployment:
        if model.attention_heads % self.tp != 0:
            raise SpecError("tp", self.tp, f"must divide attention_heads={model.attention_heads}")
        if model.layers < self.pp:
            raise SpecError("pp", self.pp, f"exceeds layers={model.layers}")
        if model.moe is None and self.ep != 1:
            raise SpecError("ep", self.ep, f"model {model.name} has no experts; ep must be 1")
        if model.moe is not None and model.moe.experts % self.ep != 0:
            raise SpecError("ep", self.ep, f"must divide moe.experts={model.moe.experts}")
        if self.attention_dp > 1:
            if model.moe is None:
                raise SpecError("attention_dp", self.attention_dp, f"needs an MoE model ({model.name} is dense: "
                                "its data-parallel copies are separate replicas); use 1")
            if self.moe_group % self.ep != 0:
                raise SpecError("ep", self.ep, f"must divide attention_dp*tp={self.moe_group} (the chips of "
                                "a stage that hold the routed experts)")
        if self.ep > self.chips:
            raise SpecError("ep", self.ep, f"exceeds the replica's chips attention_dp*tp*pp={self.chips}")
        return self


def kv_bytes_per_token(model: Model, kv_cache: str) -> float:
    """KV-cache bytes one token occupies across all layers of the replica."""
    width = (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) if model.mla is not None else 2 * model.kv_size
    return float(model.layers * width * KV_BYTES[kv_cache])


def kv_bytes_per_sequence(model: Model, kv_cache: str, length: Any) -> FloatArray:
    """KV-cache bytes of one sequence of ``length`` tokens across all layers: full-attention
    layers hold ``length`` tokens, sliding-window layers ``min(length, W)``
    (:meth:`Model.kv_positions`)."""
    result: FloatArray = kv_bytes_per_token(model, kv_cache) * model.kv_positions(length)
    return result


def padded(length: Any, buckets: tuple[int, ...]) -> Any:
    """``length`` rounded up to the smallest bucket that holds it (unchanged past the largest or
    without buckets): a static-shape engine runs the compiled shape, padding included (AWS
    Neuron NxD Inference bucketing)."""
    length = np.asarray(length, dtype=np.float64)
    if not buckets:
        return length
    table = np.asarray(buckets, dtype=np.float64)
    index = np.minimum(np.searchsorted(table, length), len(table) - 1)
    return np.where(length <= table[-1], table[index], length)


def mla_latent_projection_params(model: Model) -> int:
    """Weights of one MLA block's latent projections (q_a, q_b, kv_a, kv_b and their norms):
    the attention block less its output projection; 0 without MLA."""
    if model.mla is None:
        return 0
    return model.attention_params - model.attention_heads * model.mla.v_head_dim * model.hidden_size


def projection_format(model: Model, weights: str) -> str:
    """The format the attention block's input projections run in: the weights' format, except
    bf16 for an fp4 MLA model. NVIDIA's NVFP4 DeepSeek checkpoints quantise the experts and the
    attention output projection but list ``fused_a`` (q_a and kv_a), ``q_b_proj``, ``kv_b_proj``
    and the router gate in ``hf_quant_config.json`` ``exclude_modules`` (nvidia/DeepSeek-R1-FP4 as
    MLPerf Inference v5.1 ships it: mlcommons/inference_results_v5.1 @ 965182b0
    closed/NVIDIA/code/deepseek-r1/tensorrt/hf_quant_config.json; TensorRT-LLM
    docs/source/blogs/tech_blog/blog1, "Precision strategy": attention bf16, MoE nvfp4)."""
    if weights == "fp4" and model.mla is not None:
        return "bf16"
    return weights


def weight_bytes(model: Model, weights: str) -> float:
    """Bytes of a model's weights in a serving format: quantised formats hold the transformer
    blocks' linear layers at their width and the input embedding and LM head at bf16 (module
    doc), as are an fp4 MLA model's latent projections (:func:`projection_format`); bf16 is every
    weight at 2 bytes."""
    kept = model.embedding_params + model.lm_head_params
    if projection_format(model, weights) != weights:
        kept += model.layers * mla_latent_projection_params(model)
    width = float(OPERAND_BYTES[PRECISION_CODES[weights]])
    return float((model.total_params - kept) * width + kept * OPERAND_BYTES[PRECISION_CODES["bf16"]])


def routed_expert_bytes(model: Model, weights: str) -> float:
    """Bytes of the routed experts (every MoE layer's, at the format's width: they are blocks'
    linear layers); 0 for a dense model. Shared experts and the router are not counted here."""
    if model.moe is None:
        return 0.0
    width = float(OPERAND_BYTES[PRECISION_CODES[weights]])
    return float(model.moe.experts * model.expert_params * model.moe_layers * width)


#: Blom's plotting position for the largest of ``m`` normal samples (Blom 1958, "Statistical
#: Estimates and Transformed Beta-Variables"): E[max] ~ Phi^-1((m - 0.375) / (m + 0.25)).
_BLOM_ALPHA = 0.375


def expected_max_rank_load(tokens: Any, top_k: int, experts: int, ranks: int, gini: float = 0.0) -> Any:
    """Expected routed picks on the busiest of ``ranks`` EP ranks (``experts / ranks`` experts
    each) when ``tokens`` tokens each pick ``top_k`` distinct experts, at random with per-expert
    load shares of Gini coefficient ``gini`` (0: uniformly).

    A rank's load is a sum over tokens of independent hypergeometric counts (``top_k`` draws, the
    rank's ``experts / ranks`` of ``experts``): mean ``tokens * top_k / ranks``, variance
    ``tokens * top_k * p * (1 - p) * (E - k) / (E - 1)`` with ``p = 1 / ranks``. The expected
    maximum of ``ranks`` such loads, normal by the central limit theorem (balls into bins with
    many balls, Raab & Steger 1998), is ``mean + sd * z`` with ``z`` Blom's expected largest
    standard normal of ``ranks`` samples; capped at every token on the rank's experts.

    Skewed routing adds the spread of the ranks' expected shares
    (:func:`~clusterplan.training.step.rank_share_cv`, as the training estimator's
    :func:`~clusterplan.training.step.moe_imbalance` counts it); the two variances add."""
    n = np.asarray(tokens, dtype=np.float64)
    mean = n * top_k / ranks
    if ranks == 1:
        return mean
    p = 1.0 / ranks
    variance = n * top_k * p * (1.0 - p) * (experts - top_k) / max(experts - 1, 1)
    skew = mean * rank_share_cv(gini, experts / ranks)
    variance = variance + skew**2
    z = NormalDist().inv_cdf((ranks - _BLOM_ALPHA) / (ranks + 1.0 - 2.0 * _BLOM_ALPHA))
    cap = n * min(top_k, experts // ranks)
    return np.minimum(mean + np.sqrt(variance) * z, cap)


def _seconds(value: Any) -> Any:
    """A float for a scalar step, the array for an array of steps."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array


@dataclass
class ReplicaModel:
    """A :class:`~clusterplan.inference.engine.StepModel` built from specs (see module doc)."""

    model: Model
    hardware: Hardware
    deployment: Deployment
    kv_capacity_tokens: int = field(init=False)
    max_batch: int = field(init=False)
    weight_bytes_per_chip: float = field(init=False)
    kv_per_token: float = field(init=False)
    #: micro-batches in flight (= pp); kv_capacity_tokens and every step time are per engine
    engines: int = field(init=False)

    def __post_init__(self) -> None:
        # an engine stack fills the fields not set with its defaults (inference/stacks.py)
        self.deployment = apply_stack(self.deployment, self.hardware)[0]
        d = self.deployment.validate_for(self.model)
        chip = self.hardware.chip
        self.max_batch = d.max_batch
        # attention, dense and shared weights are sharded by tp (and pp) and replicated on every
        # attention-DP rank; the routed experts are spread over the stage's attention_dp x tp chips
        routed = routed_expert_bytes(self.model, d.weights)
        self.weight_bytes_per_chip = ((weight_bytes(self.model, d.weights) - routed) / (d.tp * d.pp)
                                      + routed / d.chips)
        self.kv_per_token = kv_bytes_per_token(self.model, d.kv_cache)
        usable = self.kv_budget_bytes(self.weight_bytes_per_chip)
        # K/V heads are split by TP only up to the number of KV heads (beyond, they replicate);
        # an MLA latent is shared by all heads, so every TP rank holds all of it. An attention-DP
        # rank holds the K/V of its own sequences only.
        kv_split = 1 if self.model.mla is not None else min(d.tp, self.model.kv_heads)
        per_chip_kv = self.kv_per_token / kv_split / d.pp
        if usable <= 0:
            name, value = ("attention_dp", d.attention_dp) if d.attention_dp > 1 else ("tp", d.tp)
            raise SpecError(name, value, f"the weights ({self.weight_bytes_per_chip / 2**30:.1f} GiB per chip) "
                            f"leave no room for a KV cache in {chip.hbm_bytes / 2**30:.0f} GiB: use more chips "
                            "per replica")
        # every pipeline micro-batch in flight and every attention-DP rank is an engine with its
        # own sequences and KV cache; they step together (module doc)
        self.engines = d.pp * d.attention_dp
        self.kv_capacity_tokens = int(usable / per_chip_kv / d.pp)
        self._kv_read_per_token_per_chip = per_chip_kv

    def kv_budget_bytes(self, weight_bytes_per_chip: float, extra_bytes_per_chip: float = 0.0) -> float:
        """Bytes per chip the KV cache may take: ``kv_memory_fraction`` of the memory left after the
        weights and the runtime reserve (today's rule; TensorRT-LLM's
        ``free_gpu_memory_fraction``), or for a stack whose fraction covers the whole device
        (vLLM ``gpu_memory_utilization``, SGLang ``mem_fraction_static``) that share of the HBM
        less the weights and the reserve (:mod:`~clusterplan.inference.stacks`).
        ``extra_bytes_per_chip``: other weights sharing the memory (a speculative draft)."""
        d = self.deployment
        hbm, reserved = self.hardware.chip.hbm_bytes, self.hardware.efficiency.reserved_bytes
        if d.stack is not None and KV_BUDGET[d.stack] == "total":
            return float(d.kv_memory_fraction * hbm - weight_bytes_per_chip - extra_bytes_per_chip - reserved)
        return float((hbm - weight_bytes_per_chip - extra_bytes_per_chip - reserved) * d.kv_memory_fraction)

    # ---- costs shared by every step ---------------------------------------------------------
    def _peak(self) -> float:
        return float(self.hardware.peak[PRECISION_CODES[self.deployment.weights]])

    @property
    def peak_flops_per_chip(self) -> float:
        """Dense datasheet peak FLOP/s of one chip at the weights' precision (the MFU reference;
        step times run at the sustained peak, :class:`~clusterplan.training.step.Hardware`)."""
        return float(self.hardware.rated_peak[PRECISION_CODES[self.deployment.weights]])

    def _matmul_eff(self) -> float:
        return float(self.hardware.matmul_eff[PRECISION_CODES[self.deployment.weights]])

    def _tp_time(self, tokens: Any) -> Any:
        """Two all-reduces per layer of ``tokens x hidden`` bf16 activations on the TP group."""
        d = self.deployment
        eff = self.hardware.efficiency
        if d.tp == 1:
            return np.zeros_like(np.asarray(tokens, dtype=np.float64))
        phases = coll.decompose(self.hardware.system, np.array([d.tp]), np.array([1]))
        message = np.asarray(tokens, dtype=np.float64) * self.model.hidden_size * 2.0
        per_layer = 2.0 * (coll.all_reduce_time(phases, message) + eff.collective_overhead_s)
        return np.squeeze(per_layer * self.model.layers)  # every stage's layers run in sequence

    def _pp_time(self, tokens: Any) -> Any:
        d = self.deployment
        if d.pp == 1:
            return 0.0
        message = np.asarray(tokens, dtype=np.float64) * self.model.hidden_size * 2.0
        hop = coll.p2p_time(self.hardware.system, np.array([d.tp]), message)
        return np.squeeze((d.pp - 1) * hop)

    def _gemm(self, m: Any, n: Any, k: Any, groups: Any = 1.0, scale: float = 1.0, precision: str | None = None) -> Any:
        """One GEMM (or ``groups`` grouped GEMMs) of this replica's chips at the weights'
        precision (or ``precision``): the training estimator's shape-aware roofline
        (``costs.compute``), with the serving HBM efficiency because decode GEMMs are weight-read
        bound."""
        eff = self.hardware.efficiency
        code = PRECISION_CODES[precision or self.deployment.weights]
        m = np.maximum(np.asarray(m, dtype=np.float64), 1e-9)  # a table's zero-token entry: no 0/0
        return grouped_gemm_time(m, groups, n, k, float(self.hardware.peak[code]),
                                 float(self.hardware.matmul_eff[code]) * scale, OPERAND_BYTES[code],
                                 self.hardware.chip.hbm_bandwidth, eff.inference_hbm, eff.kernel_overhead_s,
                                 eff.matmul_dim_half)

    def _layers_gemm_time(self, tokens: Any) -> Any:
        """GEMM time of one step's ``tokens`` through all of this chip's layers."""
        model, d = self.model, self.deployment
        h, tp = model.hidden_size, float(d.tp)
        _, av_width = fl.attention_core_width(model)
        kv_width = mem.kv_projection_params(model) / h
        proj_in = (model.attention_params - av_width * h) / h - kv_width
        qkv_width = proj_in / tp + kv_width / float(mem.kv_shards(model, tp))
        attention = (self._gemm(tokens, qkv_width, h, precision=projection_format(model, d.weights))
                     + self._gemm(tokens, h, av_width / tp))
        gated = model.ffn_matrices - 1
        dense_ffn = (self._gemm(tokens, gated * model.dense_ffn_size / tp, h)
                     + self._gemm(tokens, h, model.dense_ffn_size / tp))
        layers = model.dense_ffn_layers * (attention + dense_ffn) + model.moe_layers * attention
        if model.moe is not None:
            layers = layers + model.moe_layers * self._moe_ffn_time(tokens)
        return layers / d.pp

    def _elementwise_time(self, tokens: Any) -> Any:
        """Norms, residual adds, rope and the FFN activation over this chip's layers (module doc)."""
        model, d = self.model, self.deployment
        replicated, sharded = elementwise_widths(model, dropout=False)  # serving runs no dropout
        tp = float(d.tp)
        traffic = ACTIVATION_BYTES * np.asarray(tokens, dtype=np.float64) * (replicated + sharded / tp)
        return (traffic * model.layers / d.pp
                / (self.hardware.chip.hbm_bandwidth * self.hardware.efficiency.inference_hbm))

    def _moe_ffn_time(self, tokens: Any) -> Any:
        """One MoE FFN on one chip: the router, the routed experts as grouped GEMMs over the
        experts of this EP rank that the step's picks hit, and any shared experts (TP-sharded
        like a dense FFN). ``tokens`` are one rank's; with attention DP the experts see every
        rank's, ``attention_dp x tokens`` (balanced ranks). With uniform routing the expected
        number of distinct experts hit by ``n`` picks among ``E`` is ``E * (1 - (1 - 1/E)**n)``
        (the classical occupancy problem, Feller 1968, ch. II.11); only their weights are read.
        The ranks synchronise at every MoE layer, so the busiest EP rank sets the pace: it runs
        :func:`expected_max_rank_load` picks, not the mean, under the deployment's routing skew.
        The router GEMM stays bf16 (module doc)."""
        moe = self.model.moe
        assert moe is not None
        d, h = self.deployment, self.model.hidden_size
        gated = self.model.ffn_matrices - 1
        etp = max(d.moe_group // d.ep, 1)
        width = moe.expert_ffn_hidden_size / etp
        tokens = np.asarray(tokens, dtype=np.float64)
        routed = tokens * d.attention_dp
        visits = expected_max_rank_load(routed, moe.top_k, moe.experts, d.ep, d.routing_gini)
        local = moe.experts / d.ep
        hit = local * (1.0 - (1.0 - 1.0 / moe.experts) ** (routed * moe.top_k))
        hit = np.maximum(hit, 1e-9)  # a table's zero-token entry: no 0/0 rows per expert
        grouped = self.hardware.efficiency.grouped_matmul
        time = (self._gemm(visits, gated * width, h, groups=hit, scale=grouped)
                + self._gemm(visits, h, width, groups=hit, scale=grouped)
                + self._gemm(tokens, moe.experts, h, precision="bf16"))
        if moe.shared_experts:
            shared = moe.shared_experts * moe.expert_ffn_hidden_size
            time = time + self._gemm(tokens, gated * shared / d.tp, h) + self._gemm(tokens, h, shared / d.tp)
        # The fused MoE kernels' row expansion before the experts and gather-reduce after them.
        eff = self.hardware.efficiency
        traffic = permutation_bytes(visits, h, 2.0, ACTIVATION_BYTES)
        permutation = (memory_time(traffic, self.hardware.chip.hbm_bandwidth, eff.inference_hbm)
                       + 2.0 * eff.kernel_overhead_s)
        return time + permutation + eff.moe_layer_overhead_s

    def dispatch_bytes_per_token(self) -> float:
        """Bytes of one token's hidden state in the MoE dispatch: FP8 when the weights are fp8 or
        fp4 (:func:`~clusterplan.costs.collectives.fp8_token_bytes`), else bf16. The combine
        returns bf16 (:attr:`COMBINE_BYTES` per channel)."""
        h = self.model.hidden_size
        if self.deployment.weights in ("fp8", "fp4"):
            return coll.fp8_token_bytes(h)
        return float(h * COMBINE_BYTES)

    def _ep_phases(self) -> coll.TierPhases:
        d = self.deployment
        return coll.decompose(self.hardware.system, np.array([d.ep]), np.array([max(d.moe_group // d.ep, 1)]))

    def all_to_all_time(self, tokens: Any, dedup: bool = True) -> Any:
        """The MoE dispatch and combine of one step over all layers, with attention DP: each of
        the ``ep`` ranks of the EP group sends its share of the step's routed tokens
        (``attention_dp x tokens / ep``), de-duplicated per destination unit (DeepEP), on the
        system's fabric tiers (:func:`clusterplan.costs.collectives.expert_all_to_all_time`),
        the busiest rank receiving :func:`expected_max_rank_load` over the mean; one collective
        overhead each, not overlapped (the experts wait for their tokens, the next layer for
        the combine). Without attention DP the tokens are already on every TP rank and the TP
        all-reduce combines the experts' outputs (``_tp_time``): zero."""
        d, moe = self.deployment, self.model.moe
        tokens = np.asarray(tokens, dtype=np.float64)
        if moe is None or d.attention_dp == 1 or d.ep == 1:
            return np.zeros_like(tokens)
        routed = tokens * d.attention_dp
        mean = routed * moe.top_k / d.ep
        imbalance = np.where(mean > 0, expected_max_rank_load(routed, moe.top_k, moe.experts, d.ep, d.routing_gini)
                             / np.maximum(mean, 1e-12), 1.0)
        phases = self._ep_phases()
        sent = np.atleast_1d(routed / d.ep)
        dispatch = coll.expert_all_to_all_time(phases, sent, self.dispatch_bytes_per_token(), moe.experts,
                                               moe.top_k, dedup, np.atleast_1d(imbalance), moe.expert_groups,
                                               moe.groups_per_token)
        combine = coll.expert_all_to_all_time(phases, sent, self.model.hidden_size * COMBINE_BYTES, moe.experts,
                                              moe.top_k, dedup, np.atleast_1d(imbalance), moe.expert_groups,
                                              moe.groups_per_token)
        per_layer = dispatch + combine + 2.0 * self.hardware.efficiency.collective_overhead_s
        return np.squeeze(per_layer * self.model.moe_layers).reshape(tokens.shape)

    # ---- a step as separable terms ----------------------------------------------------------
    # A step's time is exactly token_time(new tokens) + sequence_time(sampled sequences)
    # + max(seconds_per_pair * query-key pairs, seconds_per_kv_token * cached tokens read): the
    # GEMMs, collectives and overhead depend only on the token count, the LM head only on the
    # sequence count, and fused attention is the larger of two linear terms. The simulator
    # tabulates the first two (``inference/steptimes.py``), so every step is exact and cheap.
    def token_time(self, new_tokens: Any) -> Any:
        """Everything in a step that depends only on its ``new_tokens``: every layer's GEMMs and
        elementwise kernels on each of the ``pp`` stages in turn (``pp`` x a stage's layers = all
        layers), the TP all-reduces, the PP hops, the MoE all-to-alls of attention DP and the
        engine's per-step overhead. With attention DP, ``new_tokens`` are one rank's (an engine's)."""
        tokens = np.asarray(new_tokens, dtype=np.float64)
        stages = float(self.deployment.pp)
        layers = self._layers_gemm_time(tokens) + self._elementwise_time(tokens)
        return _seconds(stages * layers + self._tp_time(tokens) + self._pp_time(tokens) + self.all_to_all_time(tokens)
                        + self.hardware.efficiency.inference_step_overhead_s)

    def sequence_time(self, sequences: Any) -> Any:
        """The LM head, on one row (the last token) per sequence that samples a token; it stays
        bf16 in quantised checkpoints (module doc)."""
        model = self.model
        return _seconds(self._gemm(np.asarray(sequences, dtype=np.float64), model.vocab_size / self.deployment.tp,
                                   model.hidden_size, precision="bf16"))

    def _seconds_per_pair_at(self, qk_head_dim: float, v_head_dim: float, kernel: str = "auto") -> float:
        """FLOP-bound time per query-key pair of heads of these dimensions (QK^T and AV, all
        layers; a stage's layers on its ``tp`` chips, the ``pp`` stages in turn), with attention
        library ``kernel`` at its measured rate relative to the family's reference one and at
        these head dimensions (``Hardware.attention_dim_rates``)."""
        flops = 2.0 * self.model.attention_heads * (qk_head_dim + v_head_dim) * self.model.layers
        eff = self.hardware.efficiency
        code = ATTENTION_KERNEL_CODES[kernel]
        attention = (eff.attention * self.hardware.attention_rate(kernel)
                     * self.hardware.attention_dim_rates(qk_head_dim, v_head_dim)[code])
        peak = self.hardware.peak[PRECISION_CODES[self.deployment.kv_cache]]  # fp8 KV: fp8 attention
        return float(flops / self.deployment.tp / (peak * attention))

    @property
    def seconds_per_pair(self) -> float:
        """Fused attention's FLOP-bound time per query-key pair of a prompt (prefill), with the
        deployment's attention library (``Deployment.attention_kernel``)."""
        return self._seconds_per_pair_at(*fl.attention_head_dims(self.model), self.deployment.attention_kernel)

    @property
    def attention_kernel_rate(self) -> float:
        """The prefill attention library's measured rate relative to the family's reference."""
        return self.hardware.attention_rate(self.deployment.attention_kernel)

    @property
    def seconds_per_decode_pair(self) -> float:
        """Fused attention's FLOP-bound time per query-key pair of a decoding sequence, at the
        family's reference attention rate whatever the prefill library (decode kernels are the
        engines' own split-K ones). The prompt's pair time except with multi-head latent
        attention, which engines decode in
        the weight-absorbed form (DeepSeek-V2, arXiv:2405.04434 section 2.1.3; FlashMLA's and
        TensorRT-LLM's generation kernels): each head's query meets the cached latent itself, QK^T
        over ``kv_lora_rank + qk_rope_head_dim`` (576 for DeepSeek-V3) and AV over
        ``kv_lora_rank`` (512), 3.4x the prompt form's 192 + 128 FLOPs per pair, in exchange for
        reading only the latent. Prompts keep the un-absorbed form, whose K and V are expanded
        once per token. That decode runs at FlashMLA's measured share of the bf16 peak
        (:data:`MLA_DECODE_FRACTION`) for any KV format."""
        mla = self.model.mla
        if mla is None:  # decode kernels (split-K, XQA) are not the prefill library: the reference rate
            return self._seconds_per_pair_at(*fl.attention_head_dims(self.model))
        width = 2 * mla.kv_lora_rank + mla.qk_rope_head_dim  # QK^T over the latent and rope, AV over the latent
        flops = 2.0 * self.model.attention_heads * width * self.model.layers
        rate = float(self.hardware.peak[PRECISION_CODES["bf16"]]) * MLA_DECODE_FRACTION
        return float(flops / self.deployment.tp / rate)

    @property
    def seconds_per_kv_token(self) -> float:
        """Fused attention's read-bound time per cached token (K and V of every layer)."""
        per_chip = self._kv_read_per_token_per_chip * self.deployment.pp  # all stages, in turn
        return float(per_chip / (self.hardware.chip.hbm_bandwidth * self.hardware.efficiency.inference_hbm))

    @property
    def request_latency_s(self) -> float:
        """Per-request latency outside the engine's steps, added to TTFT (fitted: serving stage);
        none for an engine-only measurement (``Deployment.frontend``)."""
        if self.deployment.frontend == "engine":
            return 0.0
        return float(self.hardware.efficiency.serving_request_latency_s)

    def single_request_ttft(self, prompt_tokens: Any) -> Any:
        """TTFT of a request alone on the replica: its prefill plus the request latency."""
        return _seconds(self.prefill_time(prompt_tokens, 0) + self.request_latency_s)

    def static_batch_ttft(self, batch: Any, prompt_tokens: Any) -> Any:
        """TTFT of ``batch`` requests of ``prompt_tokens`` each prefilled together in one step
        (a static batch: Transformers NeuronX and other static-shape engines encode the batch's
        contexts at once), plus the request latency: ``batch`` times the prompt's tokens and
        causal pairs, one sampled token per sequence. At ``batch`` 1 it is
        :meth:`single_request_ttft`."""
        batch = np.asarray(batch, dtype=np.float64)
        prompt = np.asarray(prompt_tokens, dtype=np.float64)
        if self.deployment.prefill_buckets:
            prompt = padded(prompt, self.deployment.prefill_buckets)
        return _seconds(self._step(batch * prompt, batch * self.model.attended_pairs(0.0, prompt),
                                   batch * self.model.kv_positions(0.0), batch) + self.request_latency_s)

    def step_terms(self) -> StepTerms | None:
        """This replica's step as separable terms (:class:`~clusterplan.inference.engine.StepTerms`);
        ``None`` for a static-shape deployment (buckets), whose padding is not separable: the
        simulator then calls the step methods directly; likewise for a sliding-window model, whose
        attention depends on each sequence's length (module doc)."""
        if self.deployment.prefill_buckets or self.deployment.decode_buckets or self.model.window_layers:
            return None
        return StepTerms(self.token_time, self.sequence_time, self.seconds_per_pair, self.seconds_per_kv_token,
                         self.seconds_per_decode_pair)

    def _step(self, new_tokens: Any, pairs: Any, kv_tokens_read: Any, sequences: Any, decode_pairs: Any = 0.0) -> Any:
        """Time of a step that runs ``new_tokens`` through the model, attends over ``pairs``
        query-key pairs of prompts and ``decode_pairs`` of decoding sequences, reads
        ``kv_tokens_read`` cached tokens and samples ``sequences`` tokens: the sum of its kernels
        (module doc)."""
        flops_bound = (self.seconds_per_pair * np.asarray(pairs, dtype=np.float64)
                       + self.seconds_per_decode_pair * np.asarray(decode_pairs, dtype=np.float64))
        attention = np.maximum(flops_bound, self.seconds_per_kv_token * np.asarray(kv_tokens_read, dtype=np.float64))
        return self.token_time(new_tokens) + self.sequence_time(sequences) + attention

    # ---- the StepModel protocol -------------------------------------------------------------
    # Each method takes scalars (and returns a float) or NumPy arrays (and returns an array of
    # step times, one per element), so a sweep over request shapes is one call.
    def prefill_time(self, tokens: Any, context: Any) -> Any:
        # causal: each new token attends to the context and, on average, half the new tokens;
        # a whole prompt (no context yet) runs at its static-shape bucket, padding included
        tokens = np.asarray(tokens, dtype=np.float64)
        if self.deployment.prefill_buckets:
            tokens = np.where(np.asarray(context) == 0, padded(tokens, self.deployment.prefill_buckets), tokens)
        return _seconds(self._step(tokens, self.model.attended_pairs(context, tokens),
                                   self.model.kv_positions(context), 1.0))

    def decode_time(self, batch: Any, total_context: Any) -> Any:
        if self.deployment.decode_buckets:  # attention over each sequence's (mean) compiled length
            batch = np.asarray(batch, dtype=np.float64)
            total_context = batch * padded(np.asarray(total_context) / batch, self.deployment.decode_buckets)
        keys = self._decode_keys(batch, total_context)
        return _seconds(self._step(batch, 0.0, keys, batch, keys))

    def mixed_time(self, prefill_tokens: Any, prefill_context: Any, batch: Any, total_context: Any) -> Any:
        prefill = np.asarray(prefill_tokens, dtype=np.float64)
        decode_keys = self._decode_keys(batch, total_context)
        pairs = self.model.attended_pairs(prefill_context, prefill)
        return _seconds(self._step(prefill + batch, pairs, decode_keys + self.model.kv_positions(prefill_context),
                                   np.asarray(batch, dtype=np.float64) + 1.0, decode_keys))

    def _decode_keys(self, batch: Any, total_context: Any) -> Any:
        """Keys a decode step attends to and reads (per layer, averaged): ``total_context``, or
        with sliding windows ``batch`` sequences of the mean context, each capped at the window
        on window layers (:meth:`Model.kv_positions`)."""
        if not self.model.window_layers:
            return total_context
        batch = np.asarray(batch, dtype=np.float64)
        mean = np.asarray(total_context, dtype=np.float64) / np.maximum(batch, 1.0)
        return batch * self.model.kv_positions(mean)

    @property
    def windowed(self) -> bool:
        """Whether a sequence holds fewer KV positions than its length (sliding-window layers)."""
        return self.model.window_layers > 0

    def kv_tokens(self, length: Any) -> FloatArray:
        """KV a sequence of ``length`` tokens holds, in tokens of ``kv_capacity_tokens`` (every
        layer's KV per token): :meth:`Model.kv_positions`, the simulator's per-sequence KV
        reservation (:mod:`~clusterplan.inference.serving`)."""
        return self.model.kv_positions(length)

    def kv_transfer_time(self, tokens: int) -> float:
        """Prefill-to-decode KV move over the scale-out network, all the replica's chips at once."""
        tier = self.hardware.system.tiers[-1]
        kv = float(kv_bytes_per_sequence(self.model, self.deployment.kv_cache, tokens))
        # one sequence lives on one attention rank: its tp * pp chips send it in parallel
        return float(kv / (tier.effective_bandwidth * self.deployment.tp * self.deployment.pp) + tier.latency_s)

    # ---- analytic steady state --------------------------------------------------------------
    def _cycle(self, batch: Any, isl: Any, osl: Any) -> tuple[Any, Any]:
        """Decode step and prefill of a batch that runs its ``osl`` steps together."""
        # keys per decode step, averaged over the osl steps (isl + osl/2 without windows)
        mean_context = batch * (self.model.attended_pairs(isl, osl) / osl if self.model.window_layers
                                else isl + osl / 2.0)
        decode = self._step(batch, 0.0, mean_context, batch, mean_context)
        # prefill of the whole batch's prompts, in chunks that keep each step a good GEMM
        prefill = self._step(batch * isl, self.model.attended_pairs(0.0, isl) * batch, 0.0, batch)
        return decode, prefill

    def offline_throughput(self, input_tokens: Any, output_tokens: Any, requests: Any = None) -> dict[str, FloatArray]:
        """Saturated throughput with continuous batching (vectorised over request shapes): the
        batch is the engine limit or what the KV cache holds at full length; each request costs
        one prefill and ``output`` decode steps shared with the batch.

        ``requests``: a finite run of that many identical requests all queued at t = 0 (an
        offline benchmark such as ``trtllm-bench throughput``, which reports total output tokens
        over the run's wall time). Identical requests admitted together finish together, so the
        engine runs ``requests // batch`` full waves and a last, partial wave whose ``output``
        steps run at its smaller batch (each no shorter than a one-sequence decode); ``None`` is
        the steady state (an endless run). Per engine for a pipeline (requests split evenly)."""
        isl = np.asarray(input_tokens, dtype=np.float64)
        osl = np.asarray(output_tokens, dtype=np.float64)
        batch = np.maximum(np.minimum(self.max_batch, np.floor(self.kv_capacity_tokens
                                                                / self.model.kv_positions(isl + osl))), 1.0)
        decode, prefill = self._cycle(batch, isl, osl)
        cycle = osl * decode + prefill
        # every engine (pipeline micro-batch in flight) runs such a cycle at the same time
        output = self.engines * batch * osl / cycle
        if requests is not None:
            per_engine = np.asarray(requests, dtype=np.float64) / self.engines
            waves = np.floor(per_engine / batch)
            rest = per_engine - waves * batch
            rest_decode, rest_prefill = self._cycle(np.maximum(rest, 1.0), isl, osl)
            wall = waves * cycle + np.where(rest > 0, osl * rest_decode + rest_prefill, 0.0)
            output = self.engines * per_engine * osl / wall
        return {"batch": self.engines * batch, "output_tokens_per_s": output,
                "total_tokens_per_s": output * (isl + osl) / osl,
                "decode_step_s": np.asarray(decode), "prefill_s": np.asarray(prefill)}
