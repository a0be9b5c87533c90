"""A transformer language model's architecture, and the parameter counts that follow from it.

Counts follow the usual decoder-only layout: per layer an attention block (QKV and output
projections, or MLA's low-rank projections) and an FFN (GeLU/ReLU: two matrices; SwiGLU: three),
two norms per layer, a final norm, token embedding and an LM head (shared when tied).

Attention may be local on some layers: with ``sliding_window`` W, a window layer's query attends
to the last W positions only (itself included; Beltagy et al. 2020, Longformer; Mistral 7B,
Jiang et al. 2023, section 2), and every ``full_attention_every``-th layer attends to the whole
context, as the Hugging Face configs' ``layer_types`` lay them out: gpt-oss alternates 128-token
window and full layers (OpenAI, "gpt-oss-120b & gpt-oss-20b Model Card", 2025, section 2.1),
Gemma 2 alternates 4096-token local and global layers (Gemma Team 2024, arXiv:2408.00118,
section 2), Gemma 3 runs five 1024-token local layers per global one (Gemma Team 2025,
arXiv:2503.19786, section 2.1). A window layer caches at most W tokens of a sequence.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from clusterplan.specs._base import Spec

FloatArray = NDArray[np.float64]


class MoE(Spec):
    """Mixture-of-experts FFN: ``experts`` routed experts of which ``top_k`` are active per token,
    plus ``shared_experts`` always active; the first ``dense_layers`` layers use a dense FFN of
    ``dense_ffn_hidden_size`` (DeepSeek-V3 ``first_k_dense_replace``), and after them every
    ``layer_interval``-th layer is a MoE layer, the others dense (Llama 4
    ``interleave_moe_layer_step``: layer ``i`` is MoE when ``(i + 1) % step == 0``, transformers
    ``Llama4TextConfig``), so ``(layers - dense_layers) // layer_interval`` layers are MoE."""

    experts: int = Field(ge=1)
    top_k: int = Field(ge=1)
    shared_experts: int = Field(default=0, ge=0)
    expert_ffn_hidden_size: int = Field(ge=1)
    dense_layers: int = Field(default=0, ge=0)
    dense_ffn_hidden_size: int | None = Field(default=None, ge=1)
    layer_interval: int = Field(default=1, ge=1, le=10_000,
                                description="every n-th layer (after dense_layers) is a MoE layer")
    expert_groups: int = Field(default=1, ge=1, le=100_000, description=(
        "the routed experts form this many equal groups (transformers DeepseekV3Config n_group)"))
    groups_per_token: int = Field(default=1, ge=1, le=100_000, description=(
        "a token's experts come from at most this many groups: group-limited (node-limited) "
        "routing (DeepseekV3Config topk_group)"))

    @model_validator(mode="after")
    def _top_k_fits(self) -> MoE:
        if self.top_k > self.experts:
            raise ValueError(f"moe.top_k={self.top_k} exceeds moe.experts={self.experts}")
        if self.experts % self.expert_groups:
            raise ValueError(f"moe.expert_groups={self.expert_groups} must divide moe.experts={self.experts}")
        if self.groups_per_token > self.expert_groups:
            raise ValueError(f"moe.groups_per_token={self.groups_per_token} exceeds "
                             f"moe.expert_groups={self.expert_groups}")
        reachable = self.groups_per_token * (self.experts // self.expert_groups)
        if self.expert_groups > 1 and self.top_k > reachable:
            raise ValueError(f"moe.top_k={self.top_k} exceeds the {reachable} experts of "
                             f"moe.groups_per_token={self.groups_per_token} groups")
        return self


class MLA(Spec):
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank query and KV compression."""

    q_lora_rank: int | None = Field(default=None, ge=1)
    kv_lora_rank: int = Field(ge=1)
    qk_rope_head_dim: int = Field(ge=1)
    qk_nope_head_dim: int = Field(ge=1)
    v_head_dim: int = Field(ge=1)


class Model(Spec):
    name: str
    layers: int = Field(ge=1, le=10_000)
    hidden_size: int = Field(ge=1, le=1_000_000)
    ffn_hidden_size: int = Field(ge=1, le=10_000_000)
    attention_heads: int = Field(ge=1)
    kv_heads: int = Field(ge=1)
    vocab_size: int = Field(ge=1, le=100_000_000)
    ffn_activation: Literal["gelu", "swiglu", "relu"]
    tied_embeddings: bool = False
    head_dim: int | None = Field(default=None, ge=1)
    moe: MoE | None = None
    mla: MLA | None = None
    dropout: bool = Field(default=False, description="dropout layers present (GPT-era Megatron runs)")
    sliding_window: int | None = Field(
        default=None, ge=1, le=100_000_000,
        description="tokens a sliding-window layer attends to (itself included); None: full attention")
    full_attention_every: int | None = Field(
        default=None, ge=2, le=10_000,
        description="with sliding_window: every n-th layer (n, 2n, ...) attends to the full context, the "
        "others to the window; None: every layer is a window layer")
    attention_sinks: bool = Field(
        default=False, description="one learned sink logit per query head and layer (gpt-oss)")
    aliases: tuple[str, ...] = ()
    notes: str = ""
    source: str = Field(min_length=3)

    @model_validator(mode="after")
    def _check_heads(self) -> Model:
        if self.attention_heads % self.kv_heads != 0:
            raise ValueError(
                f"attention_heads={self.attention_heads} is not a multiple of kv_heads={self.kv_heads}"
            )
        if self.head_dim is None and self.hidden_size % self.attention_heads != 0:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by attention_heads="
                f"{self.attention_heads}; give head_dim explicitly"
            )
        if self.moe is not None and self.moe.dense_layers > self.layers:
            raise ValueError(f"moe.dense_layers={self.moe.dense_layers} exceeds layers={self.layers}")
        if self.moe is not None and self.moe_layers == 0:
            raise ValueError(f"moe.layer_interval={self.moe.layer_interval} leaves no MoE layer among the "
                             f"{self.layers - self.moe.dense_layers} layers after moe.dense_layers")
        if self.full_attention_every is not None and self.sliding_window is None:
            raise ValueError(f"full_attention_every={self.full_attention_every} needs sliding_window "
                             "(the window of the other layers)")
        if self.full_attention_every is not None and self.full_attention_every > self.layers:
            raise ValueError(f"full_attention_every={self.full_attention_every} exceeds layers={self.layers}: "
                             "no layer would attend to the full context; drop it for an all-window model")
        return self

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def d_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.attention_heads

    @property
    def q_size(self) -> int:
        """Width of the concatenated query heads (a*d_head)."""
        return self.attention_heads * self.d_head

    @property
    def kv_size(self) -> int:
        """Width of the concatenated key (or value) heads (kv*d_head)."""
        return self.kv_heads * self.d_head

    @property
    def ffn_matrices(self) -> int:
        """Weight matrices in one FFN: 3 for gated (SwiGLU), 2 otherwise."""
        return 3 if self.ffn_activation == "swiglu" else 2

    @property
    def moe_layers(self) -> int:
        """Layers with a MoE FFN: every ``moe.layer_interval``-th after the leading dense ones."""
        return 0 if self.moe is None else (self.layers - self.moe.dense_layers) // self.moe.layer_interval

    # ---- attention span ------------------------------------------------------------------
    @property
    def window_layers(self) -> int:
        """Layers that attend to the last ``sliding_window`` positions only."""
        if self.sliding_window is None:
            return 0
        every = self.full_attention_every
        return self.layers - (self.layers // every if every is not None else 0)

    @property
    def full_attention_layers(self) -> int:
        return self.layers - self.window_layers

    def kv_positions(self, length: Any) -> FloatArray:
        """Cached positions of a sequence of ``length`` tokens per layer, averaged over layers:
        ``length`` on full-attention layers, ``min(length, W)`` on window layers (a window
        layer evicts what fell out of its window: vLLM's sliding-window KV manager, the
        ``SlidingWindowCache`` of transformers). The KV bytes of a sequence are this times the
        per-token KV bytes of all layers; it is also the keys a decode step reads."""
        length = np.asarray(length, dtype=np.float64)
        if self.window_layers == 0:
            unchanged: FloatArray = length
            return unchanged
        window = np.minimum(length, float(self.sliding_window or 0))
        result: FloatArray = (self.full_attention_layers * length + self.window_layers * window) / self.layers
        return result

    def attended_pairs(self, context: Any, tokens: Any) -> FloatArray:
        """Causal query-key pairs of ``tokens`` new tokens appended to ``context`` cached ones,
        per layer averaged over layers (continuous form): a full layer's new token ``x`` attends
        to ``context + x`` keys, ``tokens * (context + tokens/2)`` in all; a window layer's to
        ``min(context + x, W)``, whose integral over ``x`` in ``[0, tokens]`` is
        ``a*(context + a/2) + (tokens - a)*W`` with ``a = clip(W - context, 0, tokens)`` the new
        tokens before the window fills. ``attended_pairs(0, s) / s`` is what a causal kernel
        computes per query of an ``s``-token sequence: ``s/2`` full, ``W - W^2/(2s)`` windowed
        (``s >= W``)."""
        context = np.asarray(context, dtype=np.float64)
        tokens = np.asarray(tokens, dtype=np.float64)
        full: FloatArray = tokens * (context + tokens / 2.0)
        if self.window_layers == 0:
            return full
        window = float(self.sliding_window or 0)
        before = np.clip(window - context, 0.0, tokens)
        windowed = before * (context + before / 2.0) + (tokens - before) * window
        result: FloatArray = (self.full_attention_layers * full + self.window_layers * windowed) / self.layers
        return result

    @property
    def dense_ffn_layers(self) -> int:
        return self.layers - self.moe_layers

    @property
    def dense_ffn_size(self) -> int:
        if self.moe is not None and self.moe.dense_ffn_hidden_size is not None:
            return self.moe.dense_ffn_hidden_size
        return self.ffn_hidden_size

    @cached_property
    def attention_params(self) -> int:
        """Weights of one attention block (projections; biases ignored)."""
        h = self.hidden_size
        if self.mla is not None:
            m = self.mla
            a = self.attention_heads
            qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
            if m.q_lora_rank is None:
                q = h * a * qk_head
            else:
                q = h * m.q_lora_rank + m.q_lora_rank * a * qk_head + m.q_lora_rank
            kv = (h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
                  + m.kv_lora_rank * a * (m.qk_nope_head_dim + m.v_head_dim))
            out = a * m.v_head_dim * h
            return q + kv + out
        return h * (self.q_size + 2 * self.kv_size) + self.q_size * h

    @property
    def sink_params(self) -> int:
        """Learned attention-sink logits of one layer: one per query head (gpt-oss ``sinks``,
        shape ``[num_attention_heads]``, transformers ``GptOssAttention``; Xiao et al. 2023,
        arXiv:2309.17453, learned as a softmax-denominator term). Counted in the layer weights,
        not in the projections (no matmul: their FLOPs are one add per score)."""
        return self.attention_heads if self.attention_sinks else 0

    @cached_property
    def dense_ffn_params(self) -> int:
        return self.ffn_matrices * self.hidden_size * self.dense_ffn_size

    @cached_property
    def expert_params(self) -> int:
        """Weights of one routed (or shared) expert."""
        if self.moe is None:
            return 0
        return self.ffn_matrices * self.hidden_size * self.moe.expert_ffn_hidden_size

    @cached_property
    def moe_ffn_params(self) -> int:
        """All weights of one MoE FFN: routed and shared experts plus the router."""
        if self.moe is None:
            return 0
        experts = self.moe.experts + self.moe.shared_experts
        return experts * self.expert_params + self.hidden_size * self.moe.experts

    @property
    def norm_params_per_layer(self) -> int:
        return 2 * self.hidden_size

    @cached_property
    def layer_params_total(self) -> int:
        """All transformer-layer weights (no embeddings)."""
        per_layer = self.attention_params + self.sink_params + self.norm_params_per_layer
        return (self.layers * per_layer + self.dense_ffn_layers * self.dense_ffn_params
                + self.moe_layers * self.moe_ffn_params)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab_size * self.hidden_size

    @cached_property
    def total_params(self) -> int:
        return self.layer_params_total + self.embedding_params + self.lm_head_params + self.hidden_size

    @cached_property
    def active_params(self) -> int:
        """Weights touched per token (routed experts: top_k of them), embeddings included."""
        if self.moe is None:
            return self.total_params
        inactive = (self.moe.experts - self.moe.top_k) * self.expert_params * self.moe_layers
        return self.total_params - inactive

    @property
    def routed_ffn_width(self) -> float:
        """Routed experts' intermediate width per token, averaged over layers (0 if dense)."""
        if self.moe is None:
            return 0.0
        return self.moe.top_k * self.moe.expert_ffn_hidden_size * self.moe_layers / self.layers

    @cached_property
    def ffn_matmul_width(self) -> float:
        """Average per-token FFN intermediate width a token is multiplied through, over layers
        (dense FFN size, or (top_k + shared) x expert size on MoE layers)."""
        if self.moe is None:
            return float(self.ffn_hidden_size)
        moe_width = (self.moe.top_k + self.moe.shared_experts) * self.moe.expert_ffn_hidden_size
        return (self.dense_ffn_layers * self.dense_ffn_size + self.moe_layers * moe_width) / self.layers
