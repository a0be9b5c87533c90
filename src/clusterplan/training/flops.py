"""FLOP counts per token (vectorised over sequence length).

Conventions, stated once and used everywhere:

* *Model FLOPs* (MFU) count each matmul once forward and twice backward (3x forward),
  attention over the full ``s x s`` score matrix (the PaLM (Chowdhery et al. 2022, App. B) and
  Megatron (Narayanan et al. 2021, eq. 3; Korthikanti et al. 2022) convention: causal masking
  is *not* halved), and the LM head; embeddings lookups and norms are free.
* *Hardware FLOPs* (HFU) add the forward work repeated by activation recomputation.
* Kernel *time* is computed elsewhere from the work a causal flash-attention kernel actually
  performs (half the score matrix), so the MFU convention does not leak into time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from clusterplan.specs.model import Model

FloatArray = NDArray[np.float64]


def attention_projection_flops(model: Model) -> float:
    """Forward matmul FLOPs per token of one layer's attention projections (QKV/MLA and output)."""
    return 2.0 * model.attention_params


def attention_core_width(model: Model) -> tuple[int, int]:
    """(QK^T contraction width, AV output width) summed over heads: a*d_qk and a*d_v."""
    if model.mla is not None:
        m = model.mla
        heads = model.attention_heads
        return heads * (m.qk_nope_head_dim + m.qk_rope_head_dim), heads * m.v_head_dim
    return model.q_size, model.q_size


def attention_head_dims(model: Model) -> tuple[int, int]:
    """(QK head dimension, V head dimension) of one attention head."""
    if model.mla is not None:
        return model.mla.qk_nope_head_dim + model.mla.qk_rope_head_dim, model.mla.v_head_dim
    return model.d_head, model.d_head


def attention_core_flops(model: Model, seq_len: Any) -> FloatArray:
    """Forward FLOPs per token of QK^T and AV of an average layer over ``seq_len`` keys (no
    causal halving); a sliding-window layer over ``min(seq_len, W)`` keys, the band of the score
    matrix it computes (:meth:`Model.kv_positions`)."""
    qk, av = attention_core_width(model)
    result: FloatArray = 2.0 * model.kv_positions(seq_len) * (qk + av)
    return result


def causal_attention_core_flops(model: Model, seq_len: Any) -> FloatArray:
    """Forward FLOPs per token of QK^T and AV that a causal (flash) kernel computes in an average
    layer of a ``seq_len``-token sequence: the causal triangle, ``seq_len/2`` keys per query on
    full layers (half of :func:`attention_core_flops`), ``W - W^2/(2 seq_len)`` on window layers
    (:meth:`Model.attended_pairs`; FlashAttention-2 skips the blocks outside the band)."""
    qk, av = attention_core_width(model)
    seq = np.asarray(seq_len, dtype=np.float64)
    result: FloatArray = 2.0 * model.attended_pairs(0.0, seq) / seq * (qk + av)
    return result


def ffn_flops(model: Model) -> float:
    """Forward FFN matmul FLOPs per token averaged over layers (active experts and router)."""
    router = 0.0
    if model.moe is not None:
        router = 2.0 * model.hidden_size * model.moe.experts * model.moe_layers / model.layers
    return 2.0 * model.ffn_matrices * model.hidden_size * model.ffn_matmul_width + router


def lm_head_flops(model: Model) -> float:
    return 2.0 * model.hidden_size * model.vocab_size


def layer_forward_flops(model: Model, seq_len: Any) -> FloatArray:
    """Forward FLOPs per token of one (average) transformer layer."""
    result: FloatArray = (attention_projection_flops(model) + ffn_flops(model)
                          + attention_core_flops(model, seq_len))
    return result


def model_flops_per_token(model: Model, seq_len: Any) -> FloatArray:
    """Training model FLOPs per token (3x forward, full attention, LM head)."""
    forward = model.layers * layer_forward_flops(model, seq_len) + lm_head_flops(model)
    result: FloatArray = 3.0 * forward
    return result


def qkv_projection_flops(model: Model) -> float:
    """Forward FLOPs per token of one layer's Q/K/V (or MLA down/up) projections: the attention
    projections without the output projection."""
    return 2.0 * (model.attention_params - attention_core_width(model)[1] * model.hidden_size)


def checkpointed_module_flops(model: Model) -> dict[str, float]:
    """Forward matmul FLOPs per token, averaged over layers, that each of Megatron-Core's module
    checkpoints re-runs (``recompute_modules``; megatron/core/transformer/transformer_config.py):
    ``mla_up_proj`` MLA's Q (from the Q latent, or from the hidden state without one) and KV
    up-projections (multi_latent_attention.py); ``mlp`` the dense layers' FFN; ``moe`` a MoE
    layer's router and active routed and shared experts (moe/moe_layer.py); ``shared_experts``
    the shared experts alone."""
    h = model.hidden_size
    mla_up = 0.0
    if model.mla is not None:
        m = model.mla
        heads = model.attention_heads
        mla_up = 2.0 * heads * ((m.q_lora_rank or h) * (m.qk_nope_head_dim + m.qk_rope_head_dim)
                                + m.kv_lora_rank * (m.qk_nope_head_dim + m.v_head_dim))
    per_width = 2.0 * model.ffn_matrices * h  # an FFN's FLOPs per unit of intermediate width
    mlp = per_width * model.dense_ffn_size * model.dense_ffn_layers / model.layers
    if model.moe is None:
        return {"mla_up_proj": mla_up, "mlp": mlp, "moe": 0.0, "shared_experts": 0.0}
    moe_share = model.moe_layers / model.layers
    expert = model.moe.expert_ffn_hidden_size
    shared = per_width * model.moe.shared_experts * expert * moe_share
    moe = (per_width * model.moe.top_k * expert + 2.0 * h * model.moe.experts) * moe_share + shared
    return {"mla_up_proj": mla_up, "mlp": mlp, "moe": moe, "shared_experts": shared}


def hardware_flops_per_token(model: Model, seq_len: Any, recompute: Any, mtp: Any = 0,
                             attention_recomputed: Any = None, qkv_kept: Any = 0,
                             modules_rerun: Any = 0.0) -> FloatArray:
    """Model FLOPs plus recomputation (full re-runs every layer's forward; selective re-runs
    the attention core where ``attention_recomputed``, by default wherever recompute is
    selective: Korthikanti et al. 2022, section 5; the norms and activations it may also re-run
    are memory-bound; and ``modules_rerun``, the forward FLOPs per token and layer of the other
    checkpointed modules, :func:`checkpointed_module_flops`) plus multi-token-prediction modules
    (one layer and one LM head each, 3x forward; not in model FLOPs, as DeepSeek-V3 reports).
    Full recompute that keeps the Q/K/V projections (``qkv_kept``) does not re-run them."""
    recompute = np.asarray(recompute)
    attention = recompute == 1 if attention_recomputed is None else np.asarray(attention_recomputed)
    mtp_flops = 3.0 * np.asarray(mtp) * (layer_forward_flops(model, seq_len) + lm_head_flops(model))
    extra = np.where(
        recompute == 2,
        model.layers * (layer_forward_flops(model, seq_len)
                        - np.where(np.asarray(qkv_kept) == 1, qkv_projection_flops(model), 0.0)),
        np.where(attention, model.layers * attention_core_flops(model, seq_len), 0.0)
        + np.where(recompute == 1, model.layers * np.asarray(modules_rerun), 0.0),
    )
    result: FloatArray = model_flops_per_token(model, seq_len) + extra + mtp_flops
    return result
