"""Serving hardware (issue #17 part 6): PCIe cards, Grace Hopper, MI325X/MI355X, Gaudi 2/3,
TPU v6e/v7, Trn3 Gen2. Every entry loads with its sources; every new chip family maps to a
software stack and carries the fit that stack's rule gives it; `serve` and `train` run on one
system of each new family and their `extrapolation` names the inherited fit."""

from __future__ import annotations

import json

import pytest

from cliutil import run_cli
from clusterplan.catalog import load_chip, load_economics, load_efficiency, load_system
from clusterplan.catalog.loader import load_crossval
from clusterplan.validation.stacks import ALL_FAMILIES, STACKS

NEW_CHIPS = ["a100-pcie-80gb", "h100-pcie", "h100-nvl", "gh200", "gh200-144gb", "l40s", "rtx-pro-6000",
             "mi325x", "mi355x", "gaudi2", "gaudi3", "tpu-v6e", "tpu-v7"]
NEW_SYSTEMS = ["l40s-8gpu", "a100-pcie-8gpu", "h100-pcie-8gpu", "h100-nvl-8gpu", "gh200-nvl2", "gh200",
               "rtx-pro-6000-server", "mi325x", "mi355x", "hls-gaudi2", "hls-gaudi3", "tpu-v6e", "tpu-v7",
               "trn3-gen2-ultraserver"]
#: One system per new chip family, the stack its fit comes from, and how the flag names it.
NEW_FAMILIES = {
    "ada": ("l40s-8gpu", "gpu"), "rtx-blackwell": ("rtx-pro-6000-server", "gpu"), "cdna4": ("mi355x", "gpu"),
    "tpu-v6e": ("tpu-v6e", "tpu"), "tpu-v7": ("tpu-v7", "tpu"),
    "gaudi2": ("hls-gaudi2", "gaudi"), "gaudi3": ("hls-gaudi3", "gaudi"),
}


@pytest.mark.parametrize("name", NEW_CHIPS)
def test_new_chip_loads_sourced_with_a_known_stack(name: str) -> None:
    chip = load_chip(name)
    assert len(chip.source) >= 40 and len(chip.notes) >= 40
    assert chip.family in STACKS
    assert load_efficiency(chip.family).family == chip.family


@pytest.mark.parametrize("name", NEW_SYSTEMS)
def test_new_system_loads_with_sourced_tiers_and_economics(name: str) -> None:
    system = load_system(name)
    assert len(system.source) >= 40
    assert all(len(tier.source) >= 40 for tier in system.tiers)
    entry = load_economics().systems[name]
    assert len(entry.source) >= 40
    assert all(len(price.source) >= 40 and price.date for price in entry.rented)


def test_every_family_has_a_fit_and_a_stored_record() -> None:
    crossval = load_crossval()
    assert crossval is not None
    for family in ALL_FAMILIES:
        assert load_efficiency(family).fitted_on, family
        assert family in crossval.families, family


def test_families_without_rows_inherit_their_stacks_fit() -> None:
    # CUDA/ROCm families without rows share one fit of the CUDA families' rows (as cdna3 does);
    # those without a kernel-level measurement take it as fitted, cdna3 its own measured GEMM
    # times the fit's realisation (docs/kernels.md).
    ada = load_efficiency("ada")
    for family in ("rtx-blackwell", "cdna4"):
        assert load_efficiency(family).matmul == ada.matmul
    assert load_efficiency("cdna3").matmul["bf16"] < ada.matmul["bf16"]  # MI300X measured 0.60 of peak
    # No Gaudi family has rows: one fit of every family's rows, and the note says whose.
    gaudi = load_efficiency("gaudi3")
    assert "tpu-v5p" in gaudi.note and "hopper" in gaudi.note and "trainium1" in gaudi.note
    # A TPU family without rows takes one fit of the TPU families' rows.
    assert "rows of tpu-v4, tpu-v5e, tpu-v5p (maxtext_tpu)" in load_efficiency("tpu-v7").note


def test_figures_as_the_sources_give_them() -> None:
    assert load_chip("h100-nvl").peak("bf16") == pytest.approx(1671e12 / 2)  # sparse headline / 2
    assert load_chip("h100-pcie").peak("fp8") == pytest.approx(1513e12)
    assert load_chip("l40s").peak("fp8") == pytest.approx(733e12)
    assert load_chip("gaudi2").matmul_precisions() == ("bf16",)  # no sourced fp8 peak: refused
    assert load_chip("tpu-v7").hbm_bytes == 192 * 2**30
    gaudi3 = load_system("hls-gaudi3")
    assert gaudi3.tiers[0].bandwidth == pytest.approx(525e9)  # 21 x 200 Gb/s per direction
    assert gaudi3.tiers[1].bandwidth == pytest.approx(75e9)  # 3 x 200 Gb/s
    gen2 = load_system("trn3-gen2-ultraserver")
    assert gen2.scale_up_size == 144 and gen2.chips_per_node == 4
    assert gen2.tiers[-1].bandwidth == pytest.approx(28_800e9 / 8 / 144)  # 28.8 Tb/s EFA / 144 chips
    assert load_system("tpu-v7").scale_up_size == 9216 and load_system("tpu-v7").allocation_size == 64
    assert load_system("tpu-v6e").tiers[0].bandwidth == pytest.approx(400e9)
    assert [t.size for t in load_system("h100-nvl-8gpu").tiers] == [2, 8, None]


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:  # type: ignore[type-arg]
    code, out, err = run_cli(capsys, [*argv, "--json"])
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("family", list(NEW_FAMILIES))
def test_serve_and_train_name_the_inherited_fit(capsys: pytest.CaptureFixture[str], family: str) -> None:
    system, stack = NEW_FAMILIES[family]
    served = _json(capsys, ["serve", "--model", "llama3-8b", "--system", system])
    trained = _json(capsys, ["train", "--model", "llama3-8b", "--system", system, "--chips", "64",
                             "--seq", "4096", "--global-batch", "256", "--tp", "8"])
    for record, kind in ((served, "serving"), (trained, "dense training")):
        flags = [f for f in record["extrapolation"] if f.startswith(f"no published {family} {kind} runs")]
        assert flags, record["extrapolation"]
        assert "efficiencies inherited from " in flags[0]
        if stack == "gaudi":
            assert "no Gaudi SynapseAI family has published" in flags[0]
        elif kind == "dense training":  # every stack but Gaudi has training rows of its own
            assert "same software stack" in flags[0]
