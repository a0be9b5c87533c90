"""The Megatron-Bridge performance recipes as memory tests (validation/cases_mbridge.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from clusterplan.catalog import load_model
from clusterplan.training import memory as mem
from clusterplan.training.batch import PlanBatch
from clusterplan.validation.case import _rows
from clusterplan.validation.cases_mbridge import (
    TABLE,
    layout_stage_layers,
    megatron_bridge_recipes,
    recipe_plan,
)
from clusterplan.validation.harness import fits_fraction, run


def _row(recipe: str) -> dict[str, str]:
    return next(row for row in _rows(TABLE) if row["recipe"] == recipe)


def test_layouts_unroll_and_assign_virtual_stages_round_robin() -> None:
    # DeepSeek-V3 on PP8 VP4: 32 virtual stages; rank 0 holds stages 0, 8, 16, 24 (1+2+2+2
    # layers), rank 7 holds 7, 15, 23, 31 (2+2+2 and the MTP layer with the loss).
    ranks = layout_stage_layers("Et|(tt|)*30mL", 8)
    assert ranks[0] == (7, False)
    assert ranks[7] == (6, True)
    assert [count for count, _ in ranks[1:7]] == [8] * 6
    assert sum(count for count, _ in ranks) == 61
    # x*n repeats and commas are cosmetic.
    assert layout_stage_layers("Et*4|(t*4|)*14tmL", 4) == [(16, False), (16, False), (16, False), (13, True)]
    assert sum(c for c, _ in layout_stage_layers("Et*2|(t*2|)*34,t*3|(t*2|)*3,tL", 8)) == 2 + 34 * 2 + 3 + 3 * 2 + 1
    with pytest.raises(ValueError):
        layout_stage_layers("Et|tt|tL", 2)


def test_a_recipe_maps_onto_the_plan_setting_by_setting() -> None:
    row = _row("deepseek_v3_pretrain_1024gpu_h100_bf16_config")
    model = load_model("deepseek-v3")
    plan = recipe_plan(model, row)
    assert (plan.tp, plan.pp, plan.vp, plan.ep, plan.dp) == (2, 8, 4, 64, 64)
    assert plan.recompute == "selective" and set(plan.recompute_modules) == {"mla_up_proj", "mlp"}
    assert plan.mtp == 1 and plan.ep_dedup and plan.routing_gini == 0.0
    assert (plan.first_stage_layers, plan.last_stage_layers) == (7, 6)  # its layout, Et|(tt|)*30mL
    assert plan.grad_reduce == "bf16" and plan.fused_cross_entropy and plan.zero == 1


def test_nvfp4_parameters_keep_two_quantized_copies_and_no_bf16_one() -> None:
    row = _row("llama31_405b_pretrain_256gpu_gb200_nvfp4_config")
    model = load_model("llama3-405b")
    plan = recipe_plan(model, row)
    assert plan.precision == "fp4" and plan.fp8_params
    batch = PlanBatch.from_plans([plan], model)
    assert float(mem.weight_bytes_per_param(batch)[0]) == pytest.approx(2 * (0.5 + 1 / 16))
    plain = PlanBatch.from_plans([plan.model_copy(update={"fp8_params": False})], model)
    assert float(mem.weight_bytes_per_param(plain)[0]) == pytest.approx(2 + 1)


def test_the_recipes_fit_and_their_memory_settings_are_what_makes_some_fit() -> None:
    cases = megatron_bridge_recipes()
    results = run([c for c in cases if c.skip is None])
    assert len(results) >= 150
    assert all(math.isnan(c.published) for c in cases)  # memory only: no speed to compare
    assert fits_fraction(results) >= 0.95
    # The check can fail: without its 40 offloaded layers Llama 3 70B's FSDP recipe on 64 GB200
    # no longer fits; the offload is what the recipe needed.
    case = next(c for c in cases if c.label.startswith("Llama 3 70B gb200 x64 fp8_cs"))
    assert case.plan is not None and case.plan.offload_layers == 40
    fitted = run([case])[0]
    assert fitted.fits
    bare = run([dataclasses.replace(case, plan=case.plan.model_copy(update={"offload_layers": 0}))])[0]
    assert bare.fits is False


def test_recipes_the_plan_cannot_express_or_megatron_would_refuse_are_listed_with_the_reason() -> None:
    skipped = {c.label: c.skip for c in megatron_bridge_recipes() if c.skip is not None}
    reasons = " ".join(str(reason) for reason in skipped.values())
    assert "dist_muon" in reasons  # Kimi K2's Muon optimizer
    assert "paged stash" in reasons
    assert "_dev" in reasons
    # EP 64 over the 8 ranks of a pipeline stage of 64 GPUs at PP 8: Megatron-Core cannot build it.
    assert any("DeepSeek-V3 h100 x64" in label and "ep=64" in str(reason) for label, reason in skipped.items())
