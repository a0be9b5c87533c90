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
               "v_head_dim": 128, "vocab_size": 129280, "tie_word_embeddings": False}
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
    model = load_model(_write(tmp_path, {**LLAMA31_8B, "architectures": ["MistralForCausalLM"],
                                         "sliding_window": 4096}))
    assert "sliding-window attention" in model.notes


def test_a_users_model_yaml_needs_no_source(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nlayers: 4\nhidden_size: 512\nffn_hidden_size: 2048\nattention_heads: 8\n"
                    "kv_heads: 8\nvocab_size: 32000\nffn_activation: swiglu\n", encoding="utf-8")
    model = load_model(str(path))
    assert model.name == "mine" and "no source given" in model.source
