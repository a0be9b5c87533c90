"""Training-step estimator: consistency, hand-checked formulas and physical monotonicity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from clusterplan.specs import Model, Plan
from clusterplan.training import flops as fl
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import Hardware, StepEstimate, edge_bucket_share, estimate


def _run(model: Model, hw: Hardware, **plan: Any) -> StepEstimate:
    validated = Plan(**plan).validate_for(model)
    return estimate(model, hw, PlanBatch.from_plans([validated], model))


def test_model_flops_match_korthikanti_mfu_formula(gpt22b: Model) -> None:
    s, h, layers, vocab = 2048, 6144, 48, 51200
    megatron = 72 * layers * h * h * (1 + s / (6 * h) + vocab / (12 * layers * h))
    assert float(fl.model_flops_per_token(gpt22b, s)) == pytest.approx(megatron, rel=1e-9)


def test_hardware_flops_add_the_recomputed_forward(gpt22b: Model) -> None:
    s = 2048
    full = float(fl.hardware_flops_per_token(gpt22b, s, 2))
    model = float(fl.model_flops_per_token(gpt22b, s))
    assert full == pytest.approx(model + gpt22b.layers * float(fl.layer_forward_flops(gpt22b, s)))
    # Korthikanti et al.: HFU/MFU with full recompute ~ 4/3 (recompute of everything but the head)
    assert 1.30 < full / model < 1.34


def test_breakdown_sums_to_step_and_memory_breakdown_to_total(llama_like: Model, hardware: Hardware) -> None:
    result = _run(llama_like, hardware, tp=8, pp=2, vp=2, dp=4, global_batch=64, seq_len=4096)
    assert sum(v[0] for v in result.time_breakdown.values()) == pytest.approx(result.step_time[0])
    assert sum(v[0] for v in result.memory_breakdown.values()) == pytest.approx(result.memory[0])


def test_a_batch_gives_the_same_answers_as_plans_one_at_a_time(llama_like: Model, hardware: Hardware) -> None:
    plans = [
        Plan(tp=tp, pp=pp, dp=64 // (tp * pp), global_batch=128, seq_len=4096, recompute=r, zero=z)
        for tp in (1, 2, 8) for pp in (1, 2, 4) for r in ("none", "full") for z in (0, 1, 3)
    ]
    batch = estimate(llama_like, hardware, PlanBatch.from_plans(plans, llama_like))
    singles = [float(estimate(llama_like, hardware, PlanBatch.from_plans([p], llama_like)).step_time[0])
               for p in plans]
    assert batch.step_time.tolist() == pytest.approx(singles)


def test_from_arrays_matches_from_plans(llama_like: Model, hardware: Hardware) -> None:
    tp = np.array([1, 2, 4, 8])
    arrays = PlanBatch.from_arrays(llama_like, tp=tp, dp=64 // tp, global_batch=128, seq_len=4096)
    plans = PlanBatch.from_plans(
        [Plan(tp=int(t), dp=64 // int(t), global_batch=128, seq_len=4096) for t in tp], llama_like)
    assert estimate(llama_like, hardware, arrays).step_time.tolist() == pytest.approx(
        estimate(llama_like, hardware, plans).step_time.tolist())


def test_pipeline_bubble_is_p_minus_1_over_v_m(hardware: Hardware) -> None:
    # vocab 8 makes the LM head negligible, so all stages are equal
    model = Model(name="even", layers=32, hidden_size=4096, ffn_hidden_size=16384, attention_heads=32,
                  kv_heads=32, vocab_size=8, ffn_activation="gelu", source="test")
    common = {"tp": 8, "pp": 4, "global_batch": 16, "seq_len": 2048, "overlap_pp": True}
    plain = _run(model, hardware, **common)
    interleaved = _run(model, hardware, vp=2, **common)
    m = 16
    busy = plain.time_breakdown["compute"][0] + plain.time_breakdown["tp_comm"][0]
    assert plain.time_breakdown["pp_bubble"][0] / busy == pytest.approx(3 / m, rel=0.01)
    assert interleaved.time_breakdown["pp_bubble"][0] == pytest.approx(
        plain.time_breakdown["pp_bubble"][0] / 2, rel=0.01)
    assert _run(model, hardware, tp=8, dp=4, global_batch=16, seq_len=2048).time_breakdown["pp_bubble"][0] == 0


def test_recompute_trades_time_for_memory(gpt22b: Model, hardware: Hardware) -> None:
    common = {"tp": 8, "global_batch": 8, "seq_len": 2048, "flash_attention": False, "sp": True}
    none, selective, full = (_run(gpt22b, hardware, recompute=r, **common) for r in ("none", "selective", "full"))
    assert none.step_time[0] < selective.step_time[0] < full.step_time[0]
    assert none.memory_breakdown["activations"][0] > selective.memory_breakdown["activations"][0]
    assert selective.memory_breakdown["activations"][0] > full.memory_breakdown["activations"][0]
    assert full.hfu[0] > full.mfu[0]


def test_edge_bucket_is_megatron_core_default_bucket() -> None:
    """Megatron-Core's default bucket is max(40M, 1M x dp) parameters (DistributedDataParallel):
    at dp 8 the 40M floor, at dp 512 512M; never more than the chip's own parameters."""
    shares = edge_bucket_share(np.array([8.0, 64.0, 512.0, 512.0]), np.array([4e9, 4e9, 4e9, 2e8]))
    assert shares == pytest.approx([40e6 / 4e9, 64e6 / 4e9, 512e6 / 4e9, 1.0])


def test_wider_data_parallelism_exposes_a_larger_gradient_bucket(llama_like: Model, hardware: Hardware) -> None:
    """Without gradient accumulation the last bucket's reduction and the first bucket's gather
    wait for (or hold up) compute; Megatron-Core's buckets grow with dp, and with them the
    exposed data-parallel time per chip, though the bytes each chip moves barely change."""
    def exposed(dp: int) -> float:
        result = _run(llama_like, hardware, dp=dp, global_batch=dp, seq_len=4096, zero=1)
        return float(result.time_breakdown["dp_comm"][0])

    # Past the 40M floor the bucket, and the exposed time, grow about in proportion to dp (the
    # layer-sized buckets of rounds up to 20 kept it within a few per cent).
    assert exposed(64) < exposed(256) < exposed(1024)
    assert exposed(1024) > 3.0 * exposed(256)


def test_overlapping_the_dp_reduction_hides_it_behind_backward(llama_like: Model, hardware: Hardware) -> None:
    common = {"dp": 64, "global_batch": 64, "seq_len": 4096, "zero": 1}
    hidden = _run(llama_like, hardware, overlap_dp=True, **common)
    exposed = _run(llama_like, hardware, overlap_dp=False, **common)
    assert hidden.time_breakdown["dp_comm"][0] < exposed.time_breakdown["dp_comm"][0]
    assert hidden.time_breakdown["dp_comm"][0] > 0  # the last bucket is never hidden


def test_overlapped_tp_communication_slows_the_gemms_it_hides_behind(llama_like: Model, hardware: Hardware) -> None:
    """Hidden TP collectives are not free on a GPU: Transformer Engine's userbuffers hold
    TP_OVERLAP_UNITS of its SMs while they run, so the exposure is share x their time."""
    from clusterplan.costs import collectives as coll

    common = {"tp": 8, "global_batch": 8, "seq_len": 4096, "overlap_tp": True}
    gpu = hardware.chip.model_copy(update={"compute_units": 132})
    engines = hardware.chip.model_copy(update={"compute_units": None})
    shared = _run(llama_like, Hardware(system=hardware.system, chip=gpu, efficiency=hardware.efficiency), **common)
    free = _run(llama_like, Hardware(system=hardware.system, chip=engines, efficiency=hardware.efficiency), **common)
    blocking = _run(llama_like, Hardware(system=hardware.system, chip=engines, efficiency=hardware.efficiency),
                    **{**common, "overlap_tp": False})
    assert free.time_breakdown["tp_comm"][0] == pytest.approx(0.0, abs=1e-12)  # NVLink hides it fully
    share = coll.overlap_compute_share(132, coll.TP_OVERLAP_UNITS)
    assert shared.time_breakdown["tp_comm"][0] == pytest.approx(share * blocking.time_breakdown["tp_comm"][0])
    assert free.step_time[0] < shared.step_time[0] < blocking.step_time[0]


def test_fp8_is_faster_than_bf16_but_not_twice(llama_like: Model, hardware: Hardware) -> None:
    bf16 = _run(llama_like, hardware, tp=2, dp=4, global_batch=64, seq_len=4096, precision="bf16")
    fp8 = _run(llama_like, hardware, tp=2, dp=4, global_batch=64, seq_len=4096, precision="fp8")
    assert 1.0 < bf16.step_time[0] / fp8.step_time[0] < 2.0


def test_slower_scale_up_fabric_exposes_more_tp_communication(llama_like: Model, hardware: Hardware) -> None:
    slow_tiers = tuple(t.model_copy(update={"bandwidth": t.bandwidth / 10}) for t in hardware.system.tiers)
    slow = Hardware(system=hardware.system.model_copy(update={"tiers": slow_tiers}), chip=hardware.chip,
                    efficiency=hardware.efficiency)
    fast_result = _run(llama_like, hardware, tp=8, global_batch=8, seq_len=4096)
    slow_result = _run(llama_like, slow, tp=8, global_batch=8, seq_len=4096)
    assert slow_result.time_breakdown["tp_comm"][0] == pytest.approx(
        10 * fast_result.time_breakdown["tp_comm"][0], rel=0.01)


def test_context_parallelism_splits_activations_and_adds_ring_traffic(llama_like: Model, hardware: Hardware) -> None:
    no_cp = _run(llama_like, hardware, tp=4, dp=2, global_batch=8, seq_len=32768)
    cp = _run(llama_like, hardware, tp=4, cp=2, global_batch=8, seq_len=32768)
    assert cp.memory_breakdown["activations"][0] < 0.6 * no_cp.memory_breakdown["activations"][0]
    assert cp.time_breakdown["cp_comm"][0] >= 0.0
    assert no_cp.time_breakdown["cp_comm"][0] == 0.0


def test_memory_that_exceeds_hbm_does_not_fit(hardware: Hardware) -> None:
    big = Model(name="big", layers=96, hidden_size=12288, ffn_hidden_size=49152, attention_heads=96,
                kv_heads=96, vocab_size=51200, ffn_activation="gelu", source="test")
    result = _run(big, hardware, global_batch=1, seq_len=2048, grad_reduce="fp32")
    assert not bool(result.fits[0])
    assert result.memory[0] > 18 * big.total_params  # 18 B/param alone exceeds 80 GB
    sixteen_bit = _run(big, hardware, global_batch=1, seq_len=2048)  # the default 16-bit gradients
    assert result.memory[0] - sixteen_bit.memory[0] == pytest.approx(2 * big.total_params)


def test_mfu_is_model_flops_rate_over_peak(llama_like: Model, hardware: Hardware) -> None:
    result = _run(llama_like, hardware, tp=2, dp=4, global_batch=64, seq_len=4096)
    rate = float(fl.model_flops_per_token(llama_like, 4096)) * result.tokens_per_s_per_chip[0]
    assert result.mfu[0] == pytest.approx(rate / 1e15)
    assert result.tokens_per_s_per_chip[0] == pytest.approx(64 * 4096 / result.step_time[0] / 8)


def test_attention_head_dim_factor_follows_the_gemm_small_dimension_loss() -> None:
    from clusterplan.costs.compute import attention_head_dim_factor

    assert attention_head_dim_factor(128, 128, 72.6) == pytest.approx(1.0)
    # FlashAttention-3 on H100 BF16 (docstring): head dim 64 at 0.67-0.77 of 128, 256 at ~1.17
    assert 0.67 <= attention_head_dim_factor(64, 64, 72.6) <= 0.77
    assert 1.1 <= attention_head_dim_factor(256, 256, 72.6) <= 1.3
    assert attention_head_dim_factor(64, 64, 0.0) == pytest.approx(1.0)  # no fitted loss: none applied
    # MLA's 192-wide QK heads and 128-wide V heads sit between the two
    assert 1.0 < attention_head_dim_factor(192, 128, 72.6) < attention_head_dim_factor(192, 192, 72.6)


def test_narrow_heads_make_flash_attention_slower_at_equal_flops(hardware: Hardware) -> None:
    """Same width (64 x 64 = 32 x 128), same FLOPs: only the head dimension differs, and it
    matters only through a fitted small-dimension loss (none in the test fixture)."""
    wide = Model(name="d128", layers=8, hidden_size=4096, ffn_hidden_size=11008, attention_heads=32,
                 kv_heads=32, vocab_size=32000, ffn_activation="swiglu", source="test")
    narrow = wide.model_copy(update={"name": "d64", "attention_heads": 64, "kv_heads": 64})
    plan = {"tp": 1, "pp": 1, "dp": 8, "micro_batch": 1, "global_batch": 64, "seq_len": 8192, "recompute": "none"}
    assert _run(narrow, hardware, **plan).step_time[0] == pytest.approx(_run(wide, hardware, **plan).step_time[0])
    lossy = Hardware(system=hardware.system, chip=hardware.chip,
                     efficiency=hardware.efficiency.model_copy(update={"matmul_dim_half": 72.6}))
    fast = _run(wide, lossy, **plan)
    slow = _run(narrow, lossy, **plan)
    assert fl.attention_core_flops(wide, 8192) == pytest.approx(fl.attention_core_flops(narrow, 8192))
    assert slow.step_time[0] > fast.step_time[0]


def test_full_recompute_keeping_qkv_skips_exactly_those_gemms() -> None:
    """MaxText 'qkv_proj_offloaded': the backward re-runs the forward except the Q/K/V
    projections (kept in host memory); memory is what full recompute keeps."""
    from clusterplan.catalog import hardware_for, load_model, load_system
    from clusterplan.errors import SpecError
    from clusterplan.specs import Plan
    from clusterplan.training import flops as fl
    from clusterplan.training.batch import PlanBatch
    from clusterplan.training.step import _layer_forward, estimate

    model, hw = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    full = Plan(tp=2, dp=4, micro_batch=1, global_batch=8, seq_len=4096, recompute="full")
    kept = full.model_copy(update={"offload_qkv": True})
    batch = PlanBatch.from_plans([full, kept], model)
    result = estimate(model, hw, batch)
    qkv = _layer_forward(model, hw, PlanBatch.from_plans([full], model))["qkv"][0]
    saved = model.layers * full.micro_batches * qkv
    assert qkv > 0
    assert result.step_time[0] - result.step_time[1] == pytest.approx(saved, rel=1e-9)
    assert result.memory[0] == result.memory[1]
    # HFU counts the recomputed forward without the Q/K/V projections.
    hfu_flops = result.hfu * hw.peak[batch.precision] / result.tokens_per_s_per_chip
    assert hfu_flops[0] - hfu_flops[1] == pytest.approx(model.layers * fl.qkv_projection_flops(model), rel=1e-9)
    with pytest.raises(SpecError, match="offload_qkv"):
        Plan(tp=2, dp=4, global_batch=8, seq_len=4096, recompute="selective", offload_qkv=True).validate_for(model)


def test_fused_attention_slows_on_short_key_spans(llama_like: Model, hardware: Hardware) -> None:
    """The attention core's time per FLOP follows the measured span curve: ring attention over
    cp chunks runs each step on seq/cp keys, so CP4 at 8k tokens computes a quarter of the
    FLOPs per chip at the rate of 2k-token spans; a sliding window's band runs at the window's."""
    from clusterplan.costs.compute import attention_span_factor
    from clusterplan.training.step import _layer_forward

    def core(model: Model, **plan: Any) -> float:
        validated = Plan(**plan).validate_for(model)
        parts = _layer_forward(model, hardware, PlanBatch.from_plans([validated], model))
        return float(parts["attention"][0]) - hardware.efficiency.kernel_overhead_s

    whole = core(llama_like, dp=8, global_batch=8, seq_len=8192)
    chunked = core(llama_like, cp=4, dp=2, global_batch=8, seq_len=8192)
    expected = whole / 4 * float(attention_span_factor(8192) / attention_span_factor(2048))
    assert chunked == pytest.approx(expected, rel=1e-9)
    windowed = llama_like.model_copy(update={"sliding_window": 128})  # every layer a window layer
    band = core(windowed, dp=8, global_batch=8, seq_len=8192)
    band_flops = float(fl.causal_attention_core_flops(windowed, 8192.0))
    full_flops = float(fl.causal_attention_core_flops(llama_like, 8192.0))
    assert band == pytest.approx(whole * band_flops / full_flops
                                 * float(attention_span_factor(8192) / attention_span_factor(128)), rel=1e-9)


def test_fused_attention_runs_at_the_measured_plateau_rate_of_its_span(llama_like: Model, hardware: Hardware) -> None:
    """Round 19: the attention efficiency is the kernel's measured long-sequence plateau, so a
    whole sequence's attention runs at the span curve's rate relative to that plateau: per causal
    FLOP, 2k tokens take 1/0.82 of the plateau's time, 32k tokens 1/1.07."""
    from clusterplan.costs.compute import attention_plateau_rate
    from clusterplan.training.step import _layer_forward

    def per_flop(seq: int) -> float:
        validated = Plan(dp=8, global_batch=8, seq_len=seq).validate_for(llama_like)
        parts = _layer_forward(llama_like, hardware, PlanBatch.from_plans([validated], llama_like))
        flops = float(fl.causal_attention_core_flops(llama_like, float(seq))) * seq
        return (float(parts["attention"][0]) - hardware.efficiency.kernel_overhead_s) / flops

    ratio = per_flop(2048) / per_flop(32768)
    assert ratio == pytest.approx(float(attention_plateau_rate(32768.0) / attention_plateau_rate(2048.0)), rel=1e-9)
    assert ratio > 1.25


def test_a_sustained_clock_speeds_the_compute_not_the_memory_or_the_mfu_reference(
        llama_like: Model, hardware: Hardware) -> None:
    """Efficiency.sustained_clock scales the peak the kernels run at (GEMMs and attention), not
    HBM-bound work, and MFU stays against the datasheet peak."""
    faster = Hardware(system=hardware.system, chip=hardware.chip,
                      efficiency=hardware.efficiency.model_copy(
                          update={"sustained_clock": {hardware.chip.name: 1.25}}))
    assert faster.peak == pytest.approx(1.25 * hardware.rated_peak)
    assert hardware.peak == pytest.approx(hardware.rated_peak)
    plan = {"tp": 2, "dp": 4, "global_batch": 64, "seq_len": 4096}
    base, quick = _run(llama_like, hardware, **plan), _run(llama_like, faster, **plan)
    speedup = float(base.time_breakdown["compute"][0] / quick.time_breakdown["compute"][0])
    assert 1.0 < speedup < 1.25  # the memory-bound kernels do not follow the clock
    rate = float(fl.model_flops_per_token(llama_like, 4096)) * quick.tokens_per_s_per_chip[0]
    assert quick.mfu[0] == pytest.approx(rate / float(hardware.rated_peak[1]))
    assert quick.mfu[0] > base.mfu[0]
