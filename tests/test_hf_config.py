"""Hugging Face config.json files as models (catalog/hf_config.py; issue #15 part 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clusterplan.catalog import load_model
from clusterplan.cli import app
from clusterplan.errors import SpecError

#: The published configs' own values (huggingface.co/<repo>/blob/main/config.json), trimmed to the
#: keys a config carries besides tokenizer and rope settings.
LLAMA31_8B = {"architectures": ["LlamaForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
              "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
              "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "vocab_size": 128256,
              "_name_or_path": "meta-llama/Llama-3.1-8B"}
DEEPSEEK_V3 = {"architectures": ["DeepseekV3ForCausalLM"], "hidden_act": "silu", "hidden_size": 7168,
               "intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 256,
               "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
               "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
               "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
               "v_head_dim": 128, "vocab_size": 129280, "tie_word_embeddings": False,
               "n_group": 8, "topk_group": 4}
QWEN3_30B_A3B = {"architectures": ["Qwen3MoeForCausalLM"], "hidden_act": "silu", "hidden_size": 2048,
                 "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
                 "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_attention_heads": 32,
                 "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": False,
                 "decoder_sparse_step": 1, "mlp_only_layers": []}

COMPARED = ("layers", "hidden_size", "attention_heads", "kv_heads", "vocab_size", "ffn_activation",
            "tied_embeddings", "moe", "mla")


def _write(tmp_path: Path, config: dict[str, object], name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("config", "catalog"), [(LLAMA31_8B, "llama3-8b"), (DEEPSEEK_V3, "deepseek-v3"),
                                                 (QWEN3_30B_A3B, "qwen3-30b-a3b")])
def test_a_config_gives_the_catalog_model(tmp_path: Path, config: dict[str, object], catalog: str) -> None:
    model, reference = load_model(_write(tmp_path, config)), load_model(catalog)
    assert model.total_params == reference.total_params
    assert model.active_params == reference.active_params
    assert {k: getattr(model, k) for k in COMPARED} == {k: getattr(reference, k) for k in COMPARED}
    assert "Hugging Face config.json" in model.source


def test_the_llama31_8b_config_trains_like_the_catalog_llama3_8b(tmp_path: Path) -> None:
    args = ["--system", "dgx-h100", "--chips", "64", "--tp", "2", "--seq", "8192", "--global-batch", "64", "--json"]
    runner = CliRunner()
    from_config = runner.invoke(app, ["train", "--model", _write(tmp_path, LLAMA31_8B), *args])
    from_catalog = runner.invoke(app, ["train", "--model", "llama3-8b", *args])
    assert from_config.exit_code == 0 and from_catalog.exit_code == 0, from_config.output
    ours, theirs = json.loads(from_config.stdout), json.loads(from_catalog.stdout)
    assert ours["model"] == "Llama-3.1-8B"
    assert ours["step_time_s"] == theirs["step_time_s"] and ours["model_params"] == theirs["model_params"]


def test_an_unsupported_architecture_is_refused_naming_the_supported_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, {**LLAMA31_8B, "architectures": ["MambaForCausalLM"]})
    with pytest.raises(SpecError, match="MambaForCausalLM") as refused:
        load_model(path)
    assert "LlamaForCausalLM" in refused.value.rule and "architectures" in refused.value.field
    result = CliRunner().invoke(app, ["train", "--model", path, "--system", "dgx-h100", "--chips", "8",
                                      "--seq", "4096", "--global-batch", "8"])
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize(("change", "field"), [({"num_hidden_layers": True}, "num_hidden_layers"),
                                               ({"hidden_size": -4}, "hidden_size"),
                                               ({"hidden_act": "relu"}, "hidden_act"),
                                               ({"num_hidden_layers": None}, "num_hidden_layers")])
def test_bad_config_values_name_the_key(tmp_path: Path, change: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as refused:
        load_model(_write(tmp_path, {**LLAMA31_8B, **change}))
    assert field in refused.value.field


def test_what_the_spec_cannot_express_is_said(tmp_path: Path) -> None:
    model = load_model(_write(tmp_path, {**LLAMA31_8B, "architectures": ["Qwen2ForCausalLM"],
                                         "use_sliding_window": True, "sliding_window": 4096,
                                         "attn_logit_softcapping": 50.0}))
    assert "sliding-window attention" in model.notes and "soft-capping" in model.notes
    assert model.sliding_window is None


def test_a_mistral_sliding_window_covers_every_layer(tmp_path: Path) -> None:
    # mistralai/Mistral-7B-v0.1 config.json: sliding_window 4096 on every layer
    model = load_model(_write(tmp_path, {**LLAMA31_8B, "architectures": ["MistralForCausalLM"],
                                         "sliding_window": 4096}))
    assert (model.sliding_window, model.window_layers) == (4096, 32)


#: huggingface.co/openai/gpt-oss-120b/blob/main/config.json (trimmed: rope, quantization, eos keys).
GPT_OSS_120B: dict[str, object] = {"architectures": ["GptOssForCausalLM"], "experts_per_token": 4, "head_dim": 64,
                "hidden_act": "silu", "hidden_size": 2880, "intermediate_size": 2880,
                "layer_types": ["sliding_attention", "full_attention"] * 18, "num_attention_heads": 64,
                "num_experts_per_tok": 4, "num_hidden_layers": 36, "num_key_value_heads": 8,
                "num_local_experts": 128, "sliding_window": 128, "swiglu_limit": 7.0,
                "tie_word_embeddings": False, "vocab_size": 201088}
#: huggingface.co/google/gemma-2-27b/blob/main/config.json (no layer_types: Gemma2Config alternates).
GEMMA2_27B: dict[str, object] = {"architectures": ["Gemma2ForCausalLM"], "attn_logit_softcapping": 50.0,
              "final_logit_softcapping": 30.0, "head_dim": 128, "hidden_act": "gelu_pytorch_tanh",
              "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 4608, "intermediate_size": 36864,
              "num_attention_heads": 32, "num_hidden_layers": 46, "num_key_value_heads": 16,
              "query_pre_attn_scalar": 144, "sliding_window": 4096, "vocab_size": 256000}
#: huggingface.co/google/gemma-3-27b-pt/blob/main/config.json: the decoder in text_config, its
#: vocabulary and tied embeddings left to Gemma3TextConfig's defaults.
GEMMA3_27B: dict[str, object] = {"architectures": ["Gemma3ForConditionalGeneration"],
              "text_config": {"head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504,
                              "model_type": "gemma3_text", "num_attention_heads": 32, "num_hidden_layers": 62,
                              "num_key_value_heads": 16, "query_pre_attn_scalar": 168,
                              "sliding_window": 1024, "hidden_activation": "gelu_pytorch_tanh"},
              "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27}}
#: huggingface.co/meta-llama/Llama-4-Maverick-17B-128E/blob/main/config.json text_config.
LLAMA4_MAVERICK: dict[str, object] = {"architectures": ["Llama4ForConditionalGeneration"],
                   "text_config": {"attention_chunk_size": 8192, "head_dim": 128, "hidden_act": "silu",
                                   "hidden_size": 5120, "interleave_moe_layer_step": 2,
                                   "intermediate_size": 8192, "intermediate_size_mlp": 16384,
                                   "num_attention_heads": 40, "num_experts_per_tok": 1, "num_hidden_layers": 48,
                                   "num_key_value_heads": 8, "num_local_experts": 128, "vocab_size": 202048,
                                   "tie_word_embeddings": False}}
WINDOWED = ("sliding_window", "full_attention_every", "window_layers", "attention_sinks", "moe_layers")


@pytest.mark.parametrize(("config", "catalog"), [(GPT_OSS_120B, "gpt-oss-120b"), (GEMMA2_27B, "gemma-2-27b"),
                                                 (GEMMA3_27B, "gemma-3-27b"),
                                                 (LLAMA4_MAVERICK, "llama4-maverick")])
def test_2026_configs_give_the_catalog_models(tmp_path: Path, config: dict[str, object], catalog: str) -> None:
    model, reference = load_model(_write(tmp_path, config)), load_model(catalog)
    assert model.total_params == reference.total_params
    assert model.active_params == reference.active_params
    assert {k: getattr(model, k) for k in COMPARED + WINDOWED} == {k: getattr(reference, k)
                                                                   for k in COMPARED + WINDOWED}


def test_llama4_chunked_attention_is_said(tmp_path: Path) -> None:
    assert "chunked local attention" in load_model(_write(tmp_path, LLAMA4_MAVERICK)).notes


@pytest.mark.parametrize("architecture", ["JambaForCausalLM", "Qwen3NextForCausalLM", "MambaForCausalLM",
                                          "RwkvForCausalLM"])
def test_hybrid_and_attention_free_architectures_are_refused(tmp_path: Path, architecture: str) -> None:
    with pytest.raises(SpecError) as refused:
        load_model(_write(tmp_path, {**LLAMA31_8B, "architectures": [architecture]}))
    assert refused.value.field.endswith("architectures") and refused.value.value == architecture
    assert "hybrid or attention-free" in refused.value.rule and "GptOssForCausalLM" in refused.value.rule


def test_a_linear_attention_layer_type_is_refused(tmp_path: Path) -> None:
    # Qwen/Qwen3-Next-80B-A3B config.json lists linear_attention and full_attention layer_types
    config = {**LLAMA31_8B, "architectures": ["Qwen3ForCausalLM"],
              "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 8}
    with pytest.raises(SpecError) as refused:
        load_model(_write(tmp_path, config))
    assert refused.value.field.endswith("layer_types") and refused.value.value == "linear_attention"
    assert "sliding_attention" in refused.value.rule
    result = CliRunner().invoke(app, ["train", "--model", _write(tmp_path, config), "--system", "dgx-h100",
                                      "--chips", "8", "--seq", "4096", "--global-batch", "8"])
    assert result.exit_code == 2 and "layer_types" in result.output and "Traceback" not in result.output


def test_an_irregular_layer_pattern_is_refused(tmp_path: Path) -> None:
    types = ["sliding_attention"] * 32
    types[3] = types[10] = "full_attention"
    with pytest.raises(SpecError, match="every n-th layer"):
        load_model(_write(tmp_path, {**GPT_OSS_120B, "num_hidden_layers": 32, "layer_types": types}))


def test_a_users_model_yaml_needs_no_source(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nlayers: 4\nhidden_size: 512\nffn_hidden_size: 2048\nattention_heads: 8\n"
                    "kv_heads: 8\nvocab_size: 32000\nffn_activation: swiglu\n", encoding="utf-8")
    model = load_model(str(path))
    assert model.name == "mine" and "no source given" in model.source
