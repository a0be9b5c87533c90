"""Inference step estimator: prefill and decode steps of one serving replica, vectorised.

A replica of ``tp * pp`` chips holds the weights (sharded by TP and PP) and a KV cache in the
remaining HBM. A *decode* step generates one token for each of ``batch`` sequences: it reads
every weight once and every cached K/V entry once, and does 2 FLOPs per active parameter per
token plus the attention over each sequence's context; it is usually memory-bound. A *prefill*
step processes prompt tokens: matmuls over all of them and causal attention; it is usually
compute-bound. Both pay TP all-reduces per layer (small and latency-bound in decode), PP hops,
and a fixed engine overhead per step (scheduling, sampling, launch), fitted per chip family on
published serving results (``clusterplan calibrate``). KV sizes follow the attention type:
``2 * layers * kv_heads * head_dim`` values per token for MHA/GQA/MQA, the compressed latent for
MLA; fp8 KV halves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from clusterplan.costs import collectives as coll
from clusterplan.costs.compute import OPERAND_BYTES
from clusterplan.errors import SpecError
from clusterplan.specs import Model
from clusterplan.specs._base import Spec
from clusterplan.specs.plan import PRECISION_CODES
from clusterplan.training.step import Hardware

FloatArray = NDArray[np.float64]
KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}


class Deployment(Spec):
    """How one serving replica is laid out and configured."""

    tp: int = Field(default=1, ge=1, le=1024)
    pp: int = Field(default=1, ge=1, le=256)
    ep: int = Field(default=1, ge=1, le=1024)
    weights: Literal["bf16", "fp8", "fp4"] = "bf16"
    kv_cache: Literal["bf16", "fp8"] = "bf16"
    max_batch: int = Field(default=2048, ge=1, le=1_000_000, description="engine limit on batched sequences")
    kv_memory_fraction: float = Field(
        default=0.9, gt=0, le=1,
        description="share of the HBM left after weights and runtime that the KV cache may take")

    @property
    def chips(self) -> int:
        return self.tp * self.pp

    def validate_for(self, model: Model) -> Deployment:
        if model.attention_heads % self.tp != 0:
            raise SpecError("tp", self.tp, f"must divide attention_heads={model.attention_heads}")
        if model.layers < self.pp:
            raise SpecError("pp", self.pp, f"exceeds layers={model.layers}")
        if model.moe is None and self.ep != 1:
            raise SpecError("ep", self.ep, f"model {model.name} has no experts; ep must be 1")
        if model.moe is not None and model.moe.experts % self.ep != 0:
            raise SpecError("ep", self.ep, f"must divide moe.experts={model.moe.experts}")
        if self.ep > self.chips:
            raise SpecError("ep", self.ep, f"exceeds the replica's chips tp*pp={self.chips}")
        return self


def kv_bytes_per_token(model: Model, kv_cache: str) -> float:
    """KV-cache bytes one token occupies across all layers of the replica."""
    width = (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) if model.mla is not None else 2 * model.kv_size
    return float(model.layers * width * KV_BYTES[kv_cache])


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

    def __post_init__(self) -> None:
        d = self.deployment.validate_for(self.model)
        chip = self.hardware.chip
        self.max_batch = d.max_batch
        self.weight_bytes_per_chip = self.model.total_params * OPERAND_BYTES[PRECISION_CODES[d.weights]] / d.chips
        self.kv_per_token = kv_bytes_per_token(self.model, d.kv_cache)
        free = chip.hbm_bytes - self.weight_bytes_per_chip - self.hardware.efficiency.reserved_bytes
        usable = free * d.kv_memory_fraction
        # K/V heads are split by TP only up to the number of KV heads (beyond, they replicate);
        # an MLA latent is shared by all heads, so every TP rank holds all of it.
        kv_split = 1 if self.model.mla is not None else min(d.tp, self.model.kv_heads)
        per_chip_kv = self.kv_per_token / kv_split / d.pp
        if usable <= 0:
            raise SpecError("tp", d.tp, f"the weights ({self.weight_bytes_per_chip / 2**30:.1f} GiB per chip) leave no "
                            f"room for a KV cache in {chip.hbm_bytes / 2**30:.0f} GiB: use more chips per replica")
        self.kv_capacity_tokens = int(usable / per_chip_kv)
        self._kv_read_per_token_per_chip = per_chip_kv

    # ---- costs shared by every step ---------------------------------------------------------
    def _peak(self) -> float:
        return float(self.hardware.peak[PRECISION_CODES[self.deployment.weights]])

    @property
    def peak_flops_per_chip(self) -> float:
        """Dense peak FLOP/s of one chip at the weights' precision."""
        return self._peak()

    def _matmul_eff(self) -> float:
        return float(self.hardware.matmul_eff[PRECISION_CODES[self.deployment.weights]])

    def _tp_time(self, tokens: Any) -> Any:
        """Two all-reduces per layer of ``tokens x hidden`` bf16 activations on the TP group."""
        d = self.deployment
        if d.tp == 1:
            return np.zeros_like(np.asarray(tokens, dtype=np.float64))
        phases = coll.decompose(self.hardware.system, np.array([d.tp]), np.array([1]))
        message = np.asarray(tokens, dtype=np.float64) * self.model.hidden_size * 2.0
        per_layer = 2.0 * (coll.all_reduce_time(phases, message) + self.hardware.efficiency.collective_overhead_s)
        return np.squeeze(per_layer * self.model.layers)  # every stage's layers run in sequence

    def _pp_time(self, tokens: Any) -> Any:
        d = self.deployment
        if d.pp == 1:
            return 0.0
        message = np.asarray(tokens, dtype=np.float64) * self.model.hidden_size * 2.0
        hop = coll.p2p_time(self.hardware.system, np.array([d.tp]), message)
        return np.squeeze((d.pp - 1) * hop)

    def _step(self, new_tokens: Any, attention_flops: Any, kv_tokens_read: Any) -> Any:
        """Time of a step that runs ``new_tokens`` through the model, does ``attention_flops``
        of attention, and reads ``kv_tokens_read`` cached tokens."""
        eff = self.hardware.efficiency
        d = self.deployment
        chips = d.chips
        new_tokens = np.asarray(new_tokens, dtype=np.float64)
        matmul = 2.0 * self.model.active_params * new_tokens / chips
        compute = (matmul / (self._peak() * self._matmul_eff())
                   + np.asarray(attention_flops) / chips / (self.hardware.peak[1] * eff.attention))
        # Weights are read once per step (all experts that are hit: at least the active ones).
        weights = self.weight_bytes_per_chip
        if self.model.moe is not None:
            touched = np.minimum(1.0, new_tokens * self.model.moe.top_k / self.model.moe.experts)
            expert_share = self.model.moe_layers * self.model.moe_ffn_params / self.model.total_params
            weights = weights * (1.0 - expert_share + expert_share * touched)
        traffic = weights + np.asarray(kv_tokens_read) * self._kv_read_per_token_per_chip
        memory = traffic / (self.hardware.chip.hbm_bandwidth * eff.inference_hbm)
        return (np.maximum(compute, memory) + self._tp_time(new_tokens) + self._pp_time(new_tokens)
                + eff.inference_step_overhead_s)

    def _attention_flops(self, queries: Any, keys: Any) -> Any:
        """QK^T and AV FLOPs of ``queries`` new tokens over ``keys`` cached+new tokens, all layers."""
        mla = self.model.mla
        width = self.model.q_size if mla is None else self.model.attention_heads * (
            mla.qk_nope_head_dim + mla.qk_rope_head_dim + mla.v_head_dim) / 2
        queries, keys = np.asarray(queries, dtype=np.float64), np.asarray(keys, dtype=np.float64)
        return 4.0 * queries * keys * width * self.model.layers

    # ---- the StepModel protocol -------------------------------------------------------------
    def prefill_time(self, tokens: int, context: int) -> float:
        # causal: each new token attends to the context and, on average, half the new tokens
        attention = self._attention_flops(tokens, context + tokens / 2.0)
        return float(self._step(tokens, attention, context))

    def decode_time(self, batch: int, total_context: int) -> float:
        attention = self._attention_flops(1.0, total_context)
        return float(self._step(batch, attention, total_context))

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        attention = (self._attention_flops(prefill_tokens, prefill_context + prefill_tokens / 2.0)
                     + self._attention_flops(1.0, total_context))
        return float(self._step(prefill_tokens + batch, attention, total_context + prefill_context))

    def kv_transfer_time(self, tokens: int) -> float:
        """Prefill-to-decode KV move over the scale-out network, all the replica's chips at once."""
        tier = self.hardware.system.tiers[-1]
        return float(tokens * self.kv_per_token / (tier.effective_bandwidth * self.deployment.chips) + tier.latency_s)

    # ---- analytic steady state --------------------------------------------------------------
    def offline_throughput(self, input_tokens: Any, output_tokens: Any) -> dict[str, FloatArray]:
        """Saturated throughput with continuous batching (vectorised over request shapes): the
        batch is the engine limit or what the KV cache holds at full length; each request costs
        one prefill and ``output`` decode steps shared with the batch."""
        isl = np.asarray(input_tokens, dtype=np.float64)
        osl = np.asarray(output_tokens, dtype=np.float64)
        batch = np.maximum(np.minimum(self.max_batch, np.floor(self.kv_capacity_tokens / (isl + osl))), 1.0)
        mean_context = batch * (isl + osl / 2.0)
        decode = self._step(batch, self._attention_flops(1.0, mean_context), mean_context)
        # prefill of the whole batch's prompts, in chunks that keep each step a good GEMM
        prefill_tokens = batch * isl
        prefill = self._step(prefill_tokens, self._attention_flops(isl, isl / 2.0) * batch, 0.0)
        cycle = osl * decode + prefill
        output = batch * osl / cycle
        return {"batch": batch, "output_tokens_per_s": output, "total_tokens_per_s": output * (isl + osl) / osl,
                "decode_step_s": np.asarray(decode), "prefill_s": np.asarray(prefill)}
