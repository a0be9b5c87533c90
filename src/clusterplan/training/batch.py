"""A batch of plans as a struct of NumPy arrays: the input of every vectorised estimator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clusterplan.specs.model import Model
from clusterplan.specs.plan import (
    ATTENTION_KERNEL_CODES,
    OFFLOAD_MODULE_BITS,
    PRECISION_CODES,
    RECOMPUTE_CODES,
    RECOMPUTE_MODULE_BITS,
    Plan,
)

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

#: Gini coefficient of per-expert token loads a training plan assumes when none is given: 0,
#: balanced. Published training runs are balanced by construction: NVIDIA's MoE benchmarks force
#: the balance (Megatron-Bridge docs/performance-summary.md @ 067f987df0, MoE training note: "we
#: force-balance the token distribution among experts") and DeepSeek-V3's auxiliary-loss-free
#: balancing keeps the expert load balanced through training (DeepSeek-V3 report, section
#: 2.1.2). With the routing alone at the former default of 0.2, the NeMo MoE rows were 21.4 % off
#: in sample (11.8 % with their balance; docs/validation.md, round 7).
DEFAULT_ROUTING_GINI = 0.0
#: The skew of trained checkpoints routing real text with no balancing term (GQA models
#: 0.15-0.24; MLA models above 0.24): Ma et al., "Diagnosing Overhead in Dispatch Operations"
#: (arXiv:2605.20982, 2026), H100 measurements of DeepSeek-V2-Lite, DeepSeek-MoE-16B, Qwen3-30B
#: and others. The alternative ``train --json`` reports under ``assumed`` (training/sensitivity.py).
REAL_TEXT_ROUTING_GINI = 0.2


FLOAT_FIELDS = frozenset({"capacity_factor", "routing_gini"})


def optimizer_state_bytes(moments: str) -> int:
    """Adam's state per parameter: the fp32 master copy (4 B) and two moments of 4 B (fp32) or
    2 B (bf16, Megatron-Core's precision-aware optimizer)."""
    return 4 + 2 * (4 if moments == "fp32" else 2)


@dataclass(frozen=True)
class PlanBatch:
    """Plans as parallel arrays (one element per plan). Codes: recompute 0 none, 1 selective,
    2 full; recompute_modules a bit mask of RECOMPUTE_MODULE_BITS (read only where recompute is
    1); offload_modules a bit mask of OFFLOAD_MODULE_BITS; precision 0 fp32, 1 bf16, 2 fp8,
    3 fp4. Layer counts are per pipeline rank."""

    tp: IntArray
    pp: IntArray
    vp: IntArray
    cp: IntArray
    dp: IntArray
    ep: IntArray
    etp: IntArray
    capacity_factor: FloatArray  # 0 = dropless
    routing_gini: FloatArray
    overlap_ep: IntArray
    ep_dedup: IntArray
    mtp: IntArray
    micro_batch: IntArray
    global_batch: IntArray
    seq_len: IntArray
    recompute: IntArray
    recompute_modules: IntArray
    sp: IntArray
    zero: IntArray
    dp_shard: IntArray
    precision: IntArray
    fp8_params: IntArray
    offload_layers: IntArray
    offload_qkv: IntArray
    offload_modules: IntArray
    loss_chunks: IntArray
    fused_cross_entropy: IntArray
    grad_reduce_bytes: IntArray
    optimizer_bytes: IntArray  # Adam state per parameter: fp32 master + the two moments
    overlap_dp: IntArray
    overlap_tp: IntArray
    overlap_pp: IntArray
    flash: IntArray
    attention_kernel: IntArray  # ATTENTION_KERNEL_CODES (specs/plan.py); 0 = auto
    layers_first: IntArray
    layers_middle: IntArray
    layers_last: IntArray

    def __len__(self) -> int:
        return int(self.tp.size)

    @property
    def chips(self) -> IntArray:
        result: IntArray = self.tp * self.pp * self.cp * self.dp
        return result

    def recomputes(self, module: str) -> NDArray[np.bool_]:
        """Where selective recompute re-runs ``module`` (a RECOMPUTE_MODULE_BITS key)."""
        selected = (self.recompute_modules & RECOMPUTE_MODULE_BITS[module]) != 0
        result: NDArray[np.bool_] = (self.recompute == 1) & selected
        return result

    def offloads(self, module: str) -> NDArray[np.bool_]:
        """Where fine-grained activation offloading moves ``module``'s input to host memory (an
        OFFLOAD_MODULE_BITS key)."""
        result: NDArray[np.bool_] = (self.offload_modules & OFFLOAD_MODULE_BITS[module]) != 0
        return result

    @property
    def micro_batches(self) -> IntArray:
        result: IntArray = self.global_batch // (self.micro_batch * self.dp)
        return result

    @classmethod
    def from_plans(cls, plans: Sequence[Plan], model: Model) -> PlanBatch:
        """Build a batch from validated plans (a single plan is a batch of one)."""
        columns: dict[str, list[float]] = {f.name: [] for f in fields(cls)}
        for plan in plans:
            first, middle, last = plan.stage_layers(model)
            row = {
                "tp": plan.tp, "pp": plan.pp, "vp": plan.vp, "cp": plan.cp, "dp": plan.dp,
                "ep": plan.ep, "etp": plan.etp,
                "capacity_factor": plan.capacity_factor or 0.0,
                "routing_gini": DEFAULT_ROUTING_GINI if plan.routing_gini is None else plan.routing_gini,
                "overlap_ep": int(plan.overlap_ep), "ep_dedup": int(plan.ep_dedup), "mtp": plan.mtp,
                "micro_batch": plan.micro_batch, "global_batch": plan.global_batch,
                "seq_len": plan.seq_len, "recompute": RECOMPUTE_CODES[plan.recompute],
                "recompute_modules": sum({RECOMPUTE_MODULE_BITS[m] for m in plan.recompute_modules}),
                "sp": int(plan.sp and plan.tp > 1), "zero": plan.zero,
                "dp_shard": plan.dp_shard if plan.dp_shard is not None else plan.dp * plan.cp,
                "precision": PRECISION_CODES[plan.precision],
                "fp8_params": int(plan.fp8_params), "offload_layers": plan.offload_layers,
                "offload_qkv": int(plan.offload_qkv),
                "offload_modules": sum({OFFLOAD_MODULE_BITS[m] for m in plan.offload_modules}),
                "loss_chunks": plan.loss_chunks, "fused_cross_entropy": int(plan.fused_cross_entropy),
                "grad_reduce_bytes": 4 if plan.grad_reduce == "fp32" else 2,
                "optimizer_bytes": optimizer_state_bytes(plan.optimizer_moments),
                "overlap_dp": int(plan.overlap_dp),
                "overlap_tp": int(plan.overlap_tp),
                "overlap_pp": int(plan.overlap_pp), "flash": int(plan.flash_attention),
                "attention_kernel": ATTENTION_KERNEL_CODES[plan.attention_kernel],
                "layers_first": first,
                "layers_middle": middle, "layers_last": last,
            }
            for name, value in row.items():
                columns[name].append(value)
        arrays: dict[str, Any] = {name: np.asarray(values, dtype=np.float64 if name in FLOAT_FIELDS else np.int64)
                                  for name, values in columns.items()}
        return cls(**arrays)

    @classmethod
    def from_arrays(cls, model: Model, **arrays: object) -> PlanBatch:
        """Build a batch from arrays (broadcast together); defaults match :class:`Plan`.

        Layers are split evenly over ``pp`` (the search enumerates only even splits).
        """
        defaults: dict[str, object] = {
            "tp": 1, "pp": 1, "vp": 1, "cp": 1, "dp": 1, "ep": 1, "etp": 1, "capacity_factor": 0.0,
            "routing_gini": DEFAULT_ROUTING_GINI, "overlap_ep": 0, "ep_dedup": 0, "mtp": 0, "micro_batch": 1,
            "recompute": 1, "recompute_modules": RECOMPUTE_MODULE_BITS["core_attn"], "sp": 1, "zero": 1,
            "precision": 1, "fp8_params": 0, "offload_layers": 0, "offload_qkv": 0, "offload_modules": 0,
            "loss_chunks": 1,
            "fused_cross_entropy": 0,
            "grad_reduce_bytes": 2,
            "optimizer_bytes": 12,
            "overlap_dp": 1, "overlap_tp": 0, "overlap_pp": 1,
            "flash": 1, "attention_kernel": 0,
        }
        merged = {**defaults, **arrays}
        unknown = set(merged) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown plan arrays: {sorted(unknown)}")
        broadcast = np.broadcast_arrays(*[np.asarray(v, dtype=np.float64 if k in FLOAT_FIELDS else np.int64)
                                          for k, v in merged.items()])
        values = dict(zip(merged, broadcast, strict=True))
        if "dp_shard" not in values:
            values["dp_shard"] = values["dp"] * values["cp"]
        per_stage = model.layers // values["pp"]
        values["sp"] = values["sp"] * (values["tp"] > 1)
        values.setdefault("layers_first", per_stage)
        values.setdefault("layers_middle", per_stage)
        values.setdefault("layers_last", per_stage)
        typed: dict[str, Any] = {k: np.ascontiguousarray(v, dtype=np.float64 if k in FLOAT_FIELDS else np.int64)
                                 for k, v in values.items()}
        return cls(**typed)
