"""Hugging Face ``config.json`` files as model specs (``--model path/to/config.json``).

Each supported architecture maps the config's own values onto :class:`~clusterplan.specs.Model`
with the field names of its ``transformers`` configuration class (``LlamaConfig``,
``MixtralConfig``, ``Qwen3MoeConfig``, ``DeepseekV3Config``, ``GptOssConfig``, ``Gemma2Config``,
``Gemma3TextConfig``, ``Llama4TextConfig``, ...); a multimodal config's decoder is its
``text_config``. Sliding-window layers come from ``layer_types`` (``full_attention`` /
``sliding_attention``, transformers >= 4.54) where the config has it, else from the
architecture's fixed layout: Gemma 2 and gpt-oss alternate window and full layers starting with a
window layer (``Gemma2Config``, ``GptOssConfig``), Gemma 3 makes every
``sliding_window_pattern``-th layer global (``Gemma3TextConfig``, default 6), Mistral and Mixtral
window every layer when ``sliding_window`` is set. What the spec cannot express is named in the
model's ``notes`` (logit soft-capping, Llama 4's chunked attention, Qwen's ``use_sliding_window``):
the step model then counts full attention, an upper bound. An architecture outside the list is
refused, naming ``architectures`` and the supported ones; hybrid and attention-free models
(state-space, recurrent, linear attention) are refused as such, and so is a ``layer_types`` value
other than full or sliding attention.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clusterplan.errors import SpecError

#: ``hidden_act`` values of gated FFNs (three matrices) per architecture family; the step model's
#: ``swiglu`` stands for any gated FFN (GeGLU costs the same matrices and FLOPs).
GATED = {"silu", "swish", "gelu", "gelu_pytorch_tanh", "gelu_new"}


def _int(config: dict[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise SpecError(f"{where}:{key}", None, "required by this architecture's config")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{where}:{key}", value, "must be a whole number >= 1")
    return value


def _activation(config: dict[str, Any], where: str) -> str:
    act = config.get("hidden_act", config.get("hidden_activation", "silu"))
    if act not in GATED:
        raise SpecError(f"{where}:hidden_act", act, f"must be a gated activation ({', '.join(sorted(GATED))})")
    return "swiglu"


def _dense(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The fields every supported decoder shares (Llama-style names)."""
    heads = _int(config, "num_attention_heads", where)
    spec: dict[str, Any] = {
        "layers": _int(config, "num_hidden_layers", where),
        "hidden_size": _int(config, "hidden_size", where),
        "ffn_hidden_size": _int(config, "intermediate_size", where),
        "attention_heads": heads,
        "kv_heads": _int(config, "num_key_value_heads", where, heads),
        "vocab_size": _int(config, "vocab_size", where),
        "ffn_activation": _activation(config, where),
        "tied_embeddings": bool(config.get("tie_word_embeddings", False)),
    }
    head_dim = config.get("head_dim")
    if head_dim is not None:
        spec["head_dim"] = _int(config, "head_dim", where)
    return spec


def _mixtral(config: dict[str, Any], where: str) -> dict[str, Any]:
    spec = _dense(config, where)
    spec["moe"] = {"experts": _int(config, "num_local_experts", where),
                   "top_k": _int(config, "num_experts_per_tok", where),
                   "expert_ffn_hidden_size": spec["ffn_hidden_size"]}
    return spec


def _qwen_moe(config: dict[str, Any], where: str) -> dict[str, Any]:
    spec = _dense(config, where)
    expert = _int(config, "moe_intermediate_size", where)
    moe: dict[str, Any] = {"experts": _int(config, "num_experts", where),
                           "top_k": _int(config, "num_experts_per_tok", where), "expert_ffn_hidden_size": expert}
    shared = config.get("shared_expert_intermediate_size") or 0
    if shared:  # Qwen2-MoE: one shared expert of this width = whole routed-expert widths
        if shared % expert:
            raise SpecError(f"{where}:shared_expert_intermediate_size", shared,
                            f"must be a multiple of moe_intermediate_size={expert} to be counted as shared experts")
        moe["shared_experts"] = shared // expert
    dense = list(config.get("mlp_only_layers") or [])
    step = config.get("decoder_sparse_step", 1) or 1
    if step != 1 or any(layer >= len(dense) for layer in dense):
        raise SpecError(f"{where}:mlp_only_layers", dense, "only leading dense layers (and decoder_sparse_step 1) "
                                                           "are modelled")
    if dense:
        moe["dense_layers"] = len(dense)
        moe["dense_ffn_hidden_size"] = spec["ffn_hidden_size"]
    spec["moe"] = moe
    return spec


def _deepseek(config: dict[str, Any], where: str) -> dict[str, Any]:
    spec = _dense(config, where)
    spec["kv_heads"] = spec["attention_heads"]  # MLA: every head has its own (latent-derived) K and V
    spec.pop("head_dim", None)
    spec["mla"] = {"q_lora_rank": config.get("q_lora_rank"), "kv_lora_rank": _int(config, "kv_lora_rank", where),
                   "qk_rope_head_dim": _int(config, "qk_rope_head_dim", where),
                   "qk_nope_head_dim": _int(config, "qk_nope_head_dim", where),
                   "v_head_dim": _int(config, "v_head_dim", where)}
    dense_layers = config.get("first_k_dense_replace", 0) or 0
    spec["moe"] = {"experts": _int(config, "n_routed_experts", where),
                   "top_k": _int(config, "num_experts_per_tok", where),
                   "shared_experts": config.get("n_shared_experts", 0) or 0,
                   "expert_ffn_hidden_size": _int(config, "moe_intermediate_size", where),
                   "dense_layers": dense_layers,
                   **({"dense_ffn_hidden_size": spec["ffn_hidden_size"]} if dense_layers else {})}
    groups = config.get("n_group") or 1
    if groups > 1:  # group-limited routing (DeepSeek-V2/V3: n_group, topk_group)
        spec["moe"]["expert_groups"] = _int(config, "n_group", where)
        spec["moe"]["groups_per_token"] = _int(config, "topk_group", where)
    return spec


def _gpt_oss(config: dict[str, Any], where: str) -> dict[str, Any]:
    spec = _dense(config, where)
    spec["moe"] = {"experts": _int(config, "num_local_experts", where),
                   "top_k": _int(config, "num_experts_per_tok", where, config.get("experts_per_token")),
                   "expert_ffn_hidden_size": spec["ffn_hidden_size"]}
    spec["attention_sinks"] = True  # GptOssAttention.sinks: one learned logit per head
    return spec


def _gemma(vocab_size: int) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    """Gemma 2/3: the transformers defaults a published config may leave out (tied embeddings,
    the vocabulary: ``Gemma2Config`` 256000, ``Gemma3TextConfig`` 262208)."""
    def mapping(config: dict[str, Any], where: str) -> dict[str, Any]:
        spec = _dense({"tie_word_embeddings": True, "vocab_size": vocab_size, **config}, where)
        return spec
    return mapping


def _llama4(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Llama 4 (``Llama4TextConfig``): routed experts of ``intermediate_size`` plus one shared
    expert of the same width on every ``interleave_moe_layer_step``-th layer (layer ``i`` when
    ``(i + 1) % step == 0``, or the explicit ``moe_layers``), a dense FFN of
    ``intermediate_size_mlp`` on the others (transformers ``Llama4TextDecoderLayer``)."""
    spec = _dense(config, where)
    layers = spec["layers"]
    step = _int(config, "interleave_moe_layer_step", where, 1)
    moe_layers = config.get("moe_layers")
    if moe_layers is not None and list(moe_layers) != list(range(step - 1, layers, step)):
        raise SpecError(f"{where}:moe_layers", moe_layers, f"only every interleave_moe_layer_step={step}-th "
                                                           "layer as MoE is modelled")
    expert = _int(config, "intermediate_size", where)
    dense = _int(config, "intermediate_size_mlp", where, expert)
    spec["ffn_hidden_size"] = dense
    spec["moe"] = {"experts": _int(config, "num_local_experts", where),
                   "top_k": _int(config, "num_experts_per_tok", where), "shared_experts": 1,
                   "expert_ffn_hidden_size": expert, "layer_interval": step,
                   **({"dense_ffn_hidden_size": dense} if step > 1 else {})}
    return spec


#: ``layer_types`` values the spec expresses (transformers' names); Llama 4's
#: ``chunked_attention`` is counted as full attention (named in the notes: attention_chunk_size).
LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")

#: Without ``layer_types``: every n-th layer is full attention (None: all are window layers when
#: ``sliding_window`` is set); architectures not named here ignore ``sliding_window``.
_WINDOW_EVERY: dict[str, int | None] = {
    "Gemma2ForCausalLM": 2, "GptOssForCausalLM": 2, "Gemma3ForCausalLM": 6, "Gemma3ForConditionalGeneration": 6,
    "MistralForCausalLM": None, "MixtralForCausalLM": None,
}


def _attention(config: dict[str, Any], architecture: str, layers: int, where: str) -> dict[str, Any]:
    """``sliding_window`` and ``full_attention_every`` of a config (module doc)."""
    types = config.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers:
            raise SpecError(f"{where}:layer_types", types, f"must list one type for each of the {layers} layers")
        for kind in types:
            if kind not in LAYER_TYPES:
                raise SpecError(f"{where}:layer_types", kind,
                                "hybrid or linear-attention layers are not modelled; supported layer types: "
                                + ", ".join(LAYER_TYPES))
        full = [i for i, kind in enumerate(types) if kind != "sliding_attention"]
        if len(full) == layers:
            return {}
        every = full[0] + 1 if full else None
        if every is not None and full != list(range(every - 1, layers, every)):
            raise SpecError(f"{where}:layer_types", types, "only every n-th layer full attention (the others "
                                                           "sliding) is modelled")
    elif architecture in _WINDOW_EVERY and config.get("sliding_window"):
        every = _WINDOW_EVERY[architecture]
        if architecture.startswith("Gemma3"):
            every = _int(config, "sliding_window_pattern", where, every)
        if every == 1:
            return {}
    else:
        return {}
    return {"sliding_window": _int(config, "sliding_window", where), "full_attention_every": every}


#: ``architectures[0]`` -> the mapping of its config (transformers' class names).
ARCHITECTURES: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "LlamaForCausalLM": _dense, "MistralForCausalLM": _dense, "Qwen2ForCausalLM": _dense,
    "Qwen3ForCausalLM": _dense, "GemmaForCausalLM": _gemma(256000), "Gemma2ForCausalLM": _gemma(256000),
    "Gemma3ForCausalLM": _gemma(262208), "Gemma3ForConditionalGeneration": _gemma(262208),
    "MixtralForCausalLM": _mixtral, "Qwen2MoeForCausalLM": _qwen_moe,
    "Qwen3MoeForCausalLM": _qwen_moe, "DeepseekV2ForCausalLM": _deepseek, "DeepseekV3ForCausalLM": _deepseek,
    "GptOssForCausalLM": _gpt_oss, "Llama4ForConditionalGeneration": _llama4, "Llama4ForCausalLM": _llama4,
}

#: Hybrid and attention-free architectures (state-space, recurrent or linear-attention layers):
#: refused as such, since every formula here is a transformer's.
HYBRID = {"MambaForCausalLM", "Mamba2ForCausalLM", "FalconMambaForCausalLM", "JambaForCausalLM",
          "Qwen3NextForCausalLM", "RwkvForCausalLM", "Zamba2ForCausalLM", "ZambaForCausalLM",
          "NemotronHForCausalLM", "BambaForCausalLM", "FalconH1ForCausalLM", "GraniteMoeHybridForCausalLM",
          "RecurrentGemmaForCausalLM", "MiniMaxForCausalLM", "Lfm2ForCausalLM"}

#: What the spec does not express, by config key: the step model counts full attention instead.
_NOT_MODELLED = {"use_sliding_window": "sliding-window attention (use_sliding_window)",
                 "attention_chunk_size": "chunked local attention (attention_chunk_size)",
                 "attn_logit_softcapping": "attention logit soft-capping"}


def is_hf_config(data: Any) -> bool:
    """Whether parsed file content is a Hugging Face model config (it names ``architectures``)."""
    return isinstance(data, dict) and "architectures" in data


def model_spec(data: dict[str, Any], reference: str) -> dict[str, Any]:
    """The Model fields of a Hugging Face config (multimodal configs: their ``text_config``)."""
    architectures = data.get("architectures")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise SpecError(f"{reference}:architectures", architectures, "must be a list naming the model class")
    architecture = architectures[0]
    if architecture in HYBRID:
        raise SpecError(f"{reference}:architectures", architecture,
                        "hybrid or attention-free (state-space, recurrent or linear-attention layers) models are "
                        f"not modelled; supported: {', '.join(sorted(ARCHITECTURES))}")
    if architecture not in ARCHITECTURES:
        raise SpecError(f"{reference}:architectures", architecture,
                        f"unsupported (supported: {', '.join(sorted(ARCHITECTURES))})")
    text_config = data.get("text_config")
    config: dict[str, Any] = text_config if isinstance(text_config, dict) else data
    spec = ARCHITECTURES[architecture](config, reference)
    spec.update(_attention(config, architecture, spec["layers"], reference))
    caveats = [text for key, text in _NOT_MODELLED.items() if config.get(key)]
    name = str(data.get("_name_or_path") or data.get("name_or_path") or reference).rstrip("/").split("/")[-1]
    if name.endswith(".json"):
        name = name.removesuffix(".json")
    spec.update({
        "name": name or architecture,
        "notes": f"from a Hugging Face config ({architecture})"
                 + (f"; not modelled: {', '.join(caveats)} (full attention counted)" if caveats else ""),
        "source": f"Hugging Face config.json: {reference}",
    })
    return spec
