"""The MLPerf and SC'21 Table 2 (ZeRO-3) tables, and the ZeRO-3 / FSDP gather exposure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clusterplan.catalog import hardware_for, load_efficiency, load_system
from clusterplan.costs import collectives as coll
from clusterplan.specs import Model, Plan
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import Hardware, StepEstimate, estimate, zero3_unit_exposure
from clusterplan.validation.cases import known_tables
from clusterplan.validation.cases_mlperf import evaluations, mlperf_training, training_share
from clusterplan.validation.cases_mtnlg import mtnlg_2022
from clusterplan.validation.cases_zero3 import megatron_sc21_table2_zero3, sc21_step_time
from clusterplan.validation.harness import mape, run


def test_new_tables_are_registered_and_every_row_is_modelled_or_skipped_with_a_reason() -> None:
    assert {"mlperf_training", "megatron_sc21_table2_zero3"} <= set(known_tables())
    mlperf, zero3 = mlperf_training(), megatron_sc21_table2_zero3()
    assert len(mlperf) == 54 and len(zero3) == 12  # every CSV row comes back
    for case in (*mlperf, *zero3):
        if case.skip is None:
            assert case.plan is not None and case.assumptions
        else:
            assert len(case.skip) > 10
    modelled = [c for c in mlperf if c.skip is None]
    assert len(modelled) == 21 and all(c.family in {"hopper", "blackwell"} for c in modelled)
    skipped = {c.label: c.skip or "" for c in mlperf if c.skip}
    assert all("not in the catalog" in reason for label, reason in skipped.items() if "Gaudi" in label)
    assert all("llama31_405b" in reason for label, reason in skipped.items() if "405b" in reason)
    assert all(c.skip is None for c in zero3)


def test_mlperf_conversion_by_hand() -> None:
    """v3.1 NVIDIA eos_n64 (512 H100, GBS 2048): runs 58.247/58.302/58.353 min, each
    1,207,959,552 tokens = 589,824 sequences = 288 steps; an evaluation every 12 steps (24 of
    them) on 24,567 sequences at a third of a trained one -> training share 589824 /
    (589824 + 24*24567/3) = 0.75002; median run 58.302 min."""
    assert evaluations(589_824, 2048) == 24
    share = 589_824 / (589_824 + 24 * 24_567 / 3)
    assert training_share(589_824, 2048) == pytest.approx(share)
    expected = 1_207_959_552 / (58.302 * 60 * share * 512)
    case = next(c for c in mlperf_training() if "eos_n64_ngc23.09" in c.label)
    assert case.published == pytest.approx(expected, rel=1e-12)
    assert case.published == pytest.approx(899.2, abs=0.1)
    assert case.plan is not None and (case.plan.tp, case.plan.pp, case.plan.vp) == (4, 8, 12)
    assert case.plan.precision == "fp8" and case.plan.dp == 16 and case.plan.micro_batches == 128
    # GBS 2688: an evaluation every ceil(24576/2688) = 10 steps; 220 steps -> 22.
    assert evaluations(1_211_105_280 / 2048, 2688) == 22


def test_sc21_table2_conversion_by_hand() -> None:
    """ZeRO-3, 174.6B, 1536 GPUs, batch 1536, 44 TFLOP/s per GPU: F = 96*B*s*l*h^2*(1 + s/6h +
    V/16lh) with l=96, h=12288, s=2048, V=51200 -> F / (44e12 * 1536) = 66.75 s."""
    flops = 96 * 1536 * 2048 * 96 * 12288**2 * (1 + 2048 / (6 * 12288) + 51200 / (16 * 96 * 12288))
    assert sc21_step_time(1536, 96, 12288, 44.0, 1536) == pytest.approx(flops / (44e12 * 1536))
    assert flops / (44e12 * 1536) == pytest.approx(66.75, abs=0.01)
    cases = {c.label: c for c in megatron_sc21_table2_zero3()}
    case = cases["GPT 174.6B ZeRO-3, 1536 GPUs (micro-batch 1)"]
    assert case.published == pytest.approx(flops / (44e12 * 1536))
    assert case.plan is not None and case.plan.zero == 3 and case.plan.dp == 1536 and case.plan.tp == 1
    ptdp = cases["GPT 529.6B PTD-P, 560 GPUs (TP8 PP35)"]
    assert ptdp.plan is not None and (ptdp.plan.tp, ptdp.plan.pp, ptdp.plan.dp) == (8, 35, 2)


def test_new_tables_score() -> None:
    """Guards at today's values (docs/validation.md): the PTD-P rows of Table 2 stay as close
    as Table 1's; the ZeRO-3 rows are the open gap this table exposes."""
    results = run(megatron_sc21_table2_zero3())
    ptdp = [r for r in results if "PTD-P" in r.case.label]
    assert mape(ptdp) < 6.0
    assert mape(run(mlperf_training())) < 18.0
    assert all(r.error is not None and math.isfinite(r.error) for r in results)


def test_mtnlg_rows_agree_with_their_printed_tflops_and_are_modelled() -> None:
    """The printed iteration times and TFLOP/s per GPU agree under the Megatron hardware-FLOP
    formula (530B: l=105, h=20480, s=2048, V=51200, batch 1920): 126/121/113 TFLOP/s."""
    cases = mtnlg_2022()
    assert [c.skip for c in cases] == [None, None, None]
    for case, tflops in zip(cases, (126, 121, 113), strict=True):
        assert case.plan is not None and (case.plan.tp, case.plan.pp) == (8, 35)
        gpus = case.plan.chips
        derived = sc21_step_time(1920, 105, 20480, 1.0, gpus) / case.published  # TFLOP/s
        assert derived == pytest.approx(tflops, rel=0.01)
    assert mape(run(cases)) < 26.0


# ---- ZeRO-3 / FSDP gather exposure ---------------------------------------------------------
def test_unit_exposure_is_only_the_first_gathers_when_compute_covers_them() -> None:
    gather, reduce = 0.01, 0.01
    # Compute per unit longer than its gather (forward) and gather + reduce-scatter (backward):
    # only the first unit's gathers and the last reduce-scatter remain, for any number of units.
    for units in (1.0, 8.0, 96.0):
        assert zero3_unit_exposure(gather, reduce, 0.02, 0.05, units) == pytest.approx(2 * gather + reduce)
    # Compute shorter than the gather: every further unit exposes the difference.
    short = zero3_unit_exposure(gather, reduce, 0.004, 0.012, 96.0)
    assert short == pytest.approx(3 * 0.01 + 95 * ((0.01 - 0.004) + (0.02 - 0.012)))


def test_unit_exposure_grows_as_the_micro_batch_shrinks() -> None:
    # Compute per unit scales with the micro-batch; the gathers do not.
    micro_batches = np.array([8.0, 4.0, 2.0, 1.0])
    forward, backward = 0.004 * micro_batches, 0.012 * micro_batches
    exposed = zero3_unit_exposure(0.01, 0.01, forward, backward, 48.0)
    assert exposed[0] == pytest.approx(0.03) and exposed[1] == pytest.approx(0.03)  # still hidden
    assert exposed[1] < exposed[2] < exposed[3]


def _sc21_zero3(gpus: int, micro_batch: int, slow_fabric: float = 1.0,
                compute_units: int | None = 108) -> StepEstimate:
    model = Model(name="gpt-175b", layers=96, hidden_size=12288, ffn_hidden_size=49152, attention_heads=96,
                  kv_heads=96, vocab_size=51200, ffn_activation="gelu", tied_embeddings=True, dropout=True,
                  source="SC21 section 5.3.2")
    system = load_system("dgx-a100")
    tiers = tuple(t.model_copy(update={"bandwidth": t.bandwidth / slow_fabric}) if t.size is None else t
                  for t in system.tiers)
    slow = system.model_copy(update={"tiers": tiers})
    chip = hardware_for(system).chip.model_copy(update={"compute_units": compute_units})
    hw = Hardware(system=slow, chip=chip, efficiency=load_efficiency("ampere"))
    plan = Plan(dp=gpus, micro_batch=micro_batch, global_batch=1536, seq_len=2048, recompute="full",
                sp=False, zero=3, flash_attention=False, grad_reduce="bf16").validate_for(model)
    return estimate(model, hw, PlanBatch.from_plans([plan], model))


def test_zero3_gathers_are_in_the_breakdown_and_become_exposed_with_small_micro_batches() -> None:
    # On the catalog's DGX A100 (8 x HDR per node) a 175B layer's gather (~33 ms) hides behind
    # its compute even at micro-batch 1: with collectives that took no SMs only the first
    # gathers would show; on the A100 every hidden gather and reduce-scatter also holds 20 of
    # its 108 SMs, so each of the other 95 layers adds that share of its transfers.
    ideal = [_sc21_zero3(g, 1536 // g, compute_units=None) for g in (384, 768, 1536)]
    first_only = [float(r.time_breakdown["zero3_comm"][0]) for r in ideal]
    assert max(first_only) < 0.2 and min(first_only) > 0
    fast = [_sc21_zero3(g, 1536 // g) for g in (384, 768, 1536)]
    share = coll.overlap_compute_share(108)
    for shared, alone in zip(fast, first_only, strict=True):
        assert float(shared.time_breakdown["zero3_comm"][0]) == pytest.approx(alone * (1 + 95 * share), rel=1e-9)
    # On a fabric 8x slower the gathers outlast the compute of small micro-batches: the exposed
    # time grows as GPUs double and the micro-batch halves, and the step stops shrinking.
    slow = [_sc21_zero3(g, 1536 // g, slow_fabric=8.0) for g in (384, 768, 1536)]
    exposed = [float(r.time_breakdown["zero3_comm"][0]) for r in slow]
    assert exposed[0] < exposed[1] < exposed[2]
    steps = [float(r.step_time[0]) for r in slow]
    assert steps[2] > 0.7 * steps[1]
    for result in (*fast, *slow):
        assert sum(v[0] for v in result.time_breakdown.values()) == pytest.approx(result.step_time[0])
        assert float(result.time_breakdown["dp_comm"][0]) == 0.0  # no replica groups: all ZeRO-3
