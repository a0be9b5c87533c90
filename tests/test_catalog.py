"""Catalog data: every entry loads, carries sources, and matches hand-computed figures."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from clusterplan.catalog import (
    chip_names,
    load_chip,
    load_model,
    load_system,
    model_names,
    system_names,
)
from clusterplan.errors import SpecError

REQUIRED_CHIPS = [
    "a100-80gb", "h100-sxm", "h800", "h200", "b200", "b300", "gb200", "gb300",
    "trainium1", "trainium2", "trainium3", "tpu-v4", "tpu-v5e", "tpu-v5p", "mi300x",
    # serving hardware (issue #17 part 6)
    "a100-pcie-80gb", "h100-pcie", "h100-nvl", "gh200", "gh200-144gb", "l40s", "rtx-pro-6000",
    "mi325x", "mi355x", "gaudi2", "gaudi3", "tpu-v6e", "tpu-v7",
]
REQUIRED_SYSTEMS = [
    "dgx-a100", "dgx-h100", "dgx-h800", "dgx-h200", "dgx-b200", "dgx-b300",
    "gb200-nvl72", "gb300-nvl72", "trn1", "trn1n", "trn2", "trn2-ultraserver",
    "trn3-ultraserver", "tpu-v4", "tpu-v5e", "tpu-v5p", "mi300x",
    "l40s-8gpu", "a100-pcie-8gpu", "h100-pcie-8gpu", "h100-nvl-8gpu", "gh200-nvl2", "gh200",
    "rtx-pro-6000-server", "mi325x", "mi355x", "hls-gaudi2", "hls-gaudi3", "tpu-v6e", "tpu-v7",
    "trn3-gen2-ultraserver",
]
REQUIRED_MODELS = [
    *(f"megatron-sc21-gpt-{size}" for size in
      ("1.7b", "3.6b", "7.5b", "18.4b", "39.1b", "76.1b", "145.6b", "310.1b", "529.6b")),
    "megatron-sc21-gpt-1008b",
    "korthikanti-22b", "korthikanti-175b", "korthikanti-530b", "korthikanti-1t",
    "megascale-175b", "megascale-530b",
    *(f"megatron-core-gpt-{size}" for size in
      ("1.7b", "7.1b", "16b", "32b", "70b", "119b", "177b", "314b", "462b")),
    "llama3-8b", "llama3-70b", "llama3-405b", "llama2-7b", "llama2-13b", "llama2-70b",
    "gpt3-175b", "opt-175b", "bloom-176b", "palm-540b", "deepseek-v3",
    "qwen3-30b-a3b", "qwen3-235b-a22b", "mixtral-8x22b", "gpt-oss-120b",
    "gpt3-5b", "gpt3-20b", "nemotron-8b", "nemotron-22b", "nemotron-4-340b",
]
FAMILIES = {
    "ampere", "hopper", "blackwell", "trainium1", "trainium2", "trainium3",
    "tpu-v4", "tpu-v5e", "tpu-v5p", "cdna3",
    "ada", "rtx-blackwell", "cdna4", "tpu-v6e", "tpu-v7", "gaudi2", "gaudi3",
}


def _raw(filename: str) -> list[dict]:
    text = resources.files("clusterplan.catalog").joinpath(filename).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, list)
    return data


def _non_trivial(source: str) -> bool:
    return len(source.strip()) >= 20 and any(ch.isalpha() for ch in source)


# ---- every entry loads --------------------------------------------------------------------


@pytest.mark.parametrize("name", chip_names())
def test_every_chip_loads_and_is_sourced(name: str) -> None:
    chip = load_chip(name)
    assert chip.name == name
    assert _non_trivial(chip.source)
    assert chip.family in FAMILIES
    assert chip.peak("bf16") > 0


@pytest.mark.parametrize("name", system_names())
def test_every_system_loads_with_sourced_tiers_and_known_chip(name: str) -> None:
    system = load_system(name)
    assert system.name == name
    assert _non_trivial(system.source)
    load_chip(system.chip)  # raises if the chip is not in chips.yaml
    for tier in system.tiers:
        assert _non_trivial(tier.source), f"{name}/{tier.name}"
        assert 0 < tier.efficiency <= 1
    assert system.tiers[-1].size is None


@pytest.mark.parametrize("name", model_names())
def test_every_model_loads_and_is_sourced(name: str) -> None:
    model = load_model(name)
    assert model.name == name
    assert _non_trivial(model.source)
    assert model.total_params >= model.active_params > 0


@pytest.mark.parametrize(
    ("filename", "required"),
    [("chips.yaml", REQUIRED_CHIPS), ("systems.yaml", REQUIRED_SYSTEMS),
     ("models.yaml", REQUIRED_MODELS)],
)
def test_required_names_exist_and_keys_are_unique(filename: str, required: list[str]) -> None:
    entries = _raw(filename)
    names = [entry["name"] for entry in entries]
    assert not set(required) - set(names)
    keys: list[str] = []
    for entry in entries:
        keys.extend(key.lower() for key in (entry["name"], *entry.get("aliases", ())))
    duplicates = {key for key in keys if keys.count(key) > 1}
    assert not duplicates, f"{filename}: a name or alias is used twice: {duplicates}"


# ---- hand-computed spot checks ------------------------------------------------------------


def test_chip_spot_checks() -> None:
    assert load_chip("h100-sxm").peak_flops["bf16"] == pytest.approx(989.4e12)
    assert load_chip("h100").name == "h100-sxm"  # alias
    assert load_chip("a100").peak("fp8") == pytest.approx(312e12)  # no fp8 units: bf16 rate
    assert load_chip("trainium2").hbm_bytes == 96 * 2**30
    # HBM totals as the driver exposes them (nvidia-smi), not the marketing "80 GB" / "141 GB"
    assert load_chip("h100").hbm_bytes == 81559 * 2**20
    assert load_chip("h800").hbm_bytes == load_chip("h100").hbm_bytes
    assert load_chip("a100").hbm_bytes == 80 * 2**30
    assert load_chip("h200").hbm_bytes == 143771 * 2**20
    assert load_chip("b200").peak("fp4") == pytest.approx(9e15)
    assert load_chip("gb300").peak("fp4") == pytest.approx(15e15)
    assert load_chip("trainium3").peak("fp4") == pytest.approx(2517e12)
    assert load_chip("tpu-v4").tdp_w == 192


def test_system_spot_checks() -> None:
    trn2u = load_system("trn2-ultraserver")
    assert trn2u.scale_up_size == 64
    assert [tier.size for tier in trn2u.tiers] == [16, 64, None]
    assert trn2u.tiers[0].dims == (4, 4)
    # EFAv3: 3.2 Tb/s per 16-chip instance = 200 Gb/s = 25 GB/s per chip.
    assert trn2u.tiers[-1].bandwidth == pytest.approx(25e9)
    h100 = load_system("dgx-h100")
    assert h100.tiers[0].bandwidth == pytest.approx(450e9)  # 900 GB/s bidirectional / 2
    assert h100.tiers[1].bandwidth == pytest.approx(50e9)  # 400 Gb/s per GPU
    assert h100.node_power_w == pytest.approx(10_200 - 8 * 700)
    assert load_system("dgx-h800").tiers[0].effective_bandwidth == pytest.approx(160e9)
    assert load_system("gb200-nvl72").scale_up_size == 72
    assert load_system("tpu-v5p").tiers[0].bandwidth == pytest.approx(600e9)


def test_llama3_405b_parameter_count() -> None:
    # Hand count (h=16384, 126 layers, 128 heads x 128, 8 KV heads, SwiGLU 53248, V=128256):
    #   attention  h*(16384 + 2*1024) + 16384*h   =   570,425,344
    #   FFN        3*h*53248                      = 2,617,245,696
    #   norms      2*h                            =        32,768
    #   per layer                                  = 3,187,703,808  x126 = 401,650,679,808
    #   embedding + untied LM head 2*128256*h      =  4,202,692,608
    #   final norm                                 =        16,384
    #   total                                      = 405,853,388,800 ~ 405.9e9
    model = load_model("llama3-405b")
    assert model.total_params == 405_853_388_800
    assert model.total_params == pytest.approx(405.9e9, rel=0.01)


def test_deepseek_v3_total_and_active() -> None:
    model = load_model("deepseek-v3")
    assert model.total_params == pytest.approx(671e9, rel=0.03)
    assert model.active_params == pytest.approx(37e9, rel=0.03)
    assert model.moe_layers == 58


def test_moe_models_match_published_sizes() -> None:
    published = {  # name: (total, active) in billions, from the sources cited in models.yaml
        "qwen3-30b-a3b": (30.5, 3.3),
        "qwen3-235b-a22b": (235.0, 22.0),
        "mixtral-8x22b": (141.0, 39.0),
    }
    for name, (total, active) in published.items():
        model = load_model(name)
        assert model.total_params / 1e9 == pytest.approx(total, rel=0.03), name
        assert model.active_params / 1e9 == pytest.approx(active, rel=0.03), name
    assert load_model("gpt-oss-120b").total_params / 1e9 == pytest.approx(116.8, rel=0.01)


@pytest.mark.parametrize(
    "label",
    ["GPT OSS 120B", "GPT3-175B", "GPT3-20B", "GPT3-5B", "LLAMA2-13B", "LLAMA2-70B",
     "LLAMA2-7B", "LLAMA3-70B", "LLAMA3_8B", "Nemotron-22B", "Nemotron-340B", "Nemotron-8B",
     "Qwen3_235B_a22B", "Qwen3_30B_a3B", "Korthikanti 175B (GPT-3)", "Llama 3 405B"],
)
def test_published_model_labels_resolve(label: str) -> None:
    assert load_model(label).name in REQUIRED_MODELS


@pytest.mark.parametrize("label", ["DGX-H100", "DGX-B200", "DGX-B300", "DGX-GB200", "DGX-GB300"])
def test_nemo_system_labels_resolve(label: str) -> None:
    assert load_system(label).name in REQUIRED_SYSTEMS


# ---- refusals and files -------------------------------------------------------------------


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(SpecError, match="h100-sxm"):
        load_chip("h100-sx")
    with pytest.raises(SpecError, match="unknown system"):
        load_system("no-such-cluster-xyz")
    with pytest.raises(SpecError, match="llama3-70b"):
        load_model("llama3-7b0")


def test_custom_model_yaml_path(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny-gpt\n"
        "layers: 2\nhidden_size: 256\nffn_hidden_size: 1024\n"
        "attention_heads: 4\nkv_heads: 4\nvocab_size: 1000\n"
        "ffn_activation: gelu\nsource: unit test fixture\n",
        encoding="utf-8",
    )
    model = load_model(str(path))
    assert model.name == "tiny-gpt"
    # 2 layers x (4h^2 attention + 2*h*4h FFN + 2h norms) + 2*V*h + h
    h = 256
    assert model.total_params == 2 * (4 * h * h + 8 * h * h + 2 * h) + 2 * 1000 * h + h


def test_malformed_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\nlayers: 2\n", encoding="utf-8")
    with pytest.raises(SpecError, match="malformed YAML"):
        load_model(str(path))


def test_the_catalog_reads_the_same_with_the_fast_loader_and_still_refuses_duplicate_keys() -> None:
    """The shipped catalog goes through libyaml's parser; user files through the guarded one.
    Both must read every catalog file identically, and both refuse a key written twice."""
    from clusterplan.catalog.loader import RefusedYAML, _CatalogLoader, parse_yaml

    folder = resources.files("clusterplan.catalog")
    names = [p.name for p in folder.iterdir() if p.name.endswith(".yaml")]
    names += [f"scenarios/{p.name}" for p in folder.joinpath("scenarios").iterdir() if p.name.endswith(".yaml")]
    assert len(names) >= 8
    for name in names:
        text = folder.joinpath(name).read_text(encoding="utf-8")
        assert yaml.load(text, Loader=_CatalogLoader) == parse_yaml(text), name
    with pytest.raises(RefusedYAML, match="given twice"):
        yaml.load("a: 1\nb: 2\na: 3\n", Loader=_CatalogLoader)
