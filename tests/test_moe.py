"""Mixture-of-experts, MLA, multi-token prediction and long context in the training estimator."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.specs import Model, Plan
from clusterplan.training import memory as mem
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import StepEstimate, estimate, moe_imbalance


@pytest.fixture(scope="module")
def qwen() -> Model:
    return load_model("qwen3-30b-a3b")


@pytest.fixture(scope="module")
def deepseek() -> Model:
    return load_model("deepseek-v3")


def _plan(model: Model, **fields: Any) -> Plan:
    return Plan(**fields).validate_for(model)


def _batch(model: Model, **fields: Any) -> PlanBatch:
    return PlanBatch.from_plans([_plan(model, **fields)], model)


def _run(model: Model, system: str = "dgx-h100", **fields: Any) -> StepEstimate:
    return estimate(model, hardware_for(load_system(system)), _batch(model, **fields))


def test_imbalance_is_one_when_balanced_or_local(qwen: Model) -> None:
    balanced = _batch(qwen, dp=16, ep=16, global_batch=64, seq_len=4096, routing_gini=0.0)
    local = _batch(qwen, dp=16, ep=1, global_batch=64, seq_len=4096, routing_gini=0.3)
    assert float(moe_imbalance(qwen, balanced)[0]) == 1.0
    assert float(moe_imbalance(qwen, local)[0]) == 1.0


def test_imbalance_grows_with_skew_and_ranks_and_is_capped_by_capacity(qwen: Model) -> None:
    def imbalance(**fields: Any) -> float:
        return float(moe_imbalance(qwen, _batch(qwen, dp=64, global_batch=64, seq_len=4096, **fields))[0])

    # Gini 0.2 -> CV 0.2*sqrt(pi) per expert; 128/16 = 8 experts per rank; 16 ranks
    expected = 1 + 0.2 * np.sqrt(np.pi) / np.sqrt(8) * np.sqrt(2 * np.log(16))
    assert imbalance(ep=16, routing_gini=0.2) == pytest.approx(expected)
    assert imbalance(ep=64, routing_gini=0.2) > imbalance(ep=16, routing_gini=0.2)
    assert imbalance(ep=16, routing_gini=0.3) > imbalance(ep=16, routing_gini=0.2)
    assert imbalance(ep=16, routing_gini=0.3, capacity_factor=1.1) == pytest.approx(1.1)


def test_expert_parallelism_spreads_expert_memory(qwen: Model) -> None:
    one = mem.expert_params_per_chip(qwen, _batch(qwen, dp=16, ep=1, global_batch=64, seq_len=4096))
    sixteen = mem.expert_params_per_chip(qwen, _batch(qwen, dp=16, ep=16, global_batch=64, seq_len=4096))
    assert float(one[0]) == pytest.approx(16 * float(sixteen[0]))
    moe = qwen.moe
    assert moe is not None
    assert float(one[0]) == pytest.approx(moe.experts * qwen.expert_params * qwen.moe_layers / qwen.layers)


def test_all_to_all_appears_with_ep_and_hides_with_overlap(qwen: Model) -> None:
    common = {"dp": 16, "global_batch": 64, "seq_len": 4096}
    local = _run(qwen, ep=1, **common)
    spread = _run(qwen, ep=16, **common)
    overlapped = _run(qwen, ep=16, overlap_ep=True, **common)
    assert local.time_breakdown["ep_comm"][0] == 0.0
    assert spread.time_breakdown["ep_comm"][0] > 0.0
    assert overlapped.time_breakdown["ep_comm"][0] < spread.time_breakdown["ep_comm"][0]


def test_imbalance_slows_the_step(qwen: Model) -> None:
    common = {"dp": 16, "ep": 16, "global_batch": 64, "seq_len": 4096}
    assert _run(qwen, routing_gini=0.3, **common).step_time[0] > _run(qwen, routing_gini=0.0, **common).step_time[0]


def test_multi_token_prediction_adds_work_not_model_flops(deepseek: Model) -> None:
    common = {"pp": 16, "first_stage_layers": 3, "last_stage_layers": 2, "dp": 128, "ep": 64,
              "global_batch": 1024, "seq_len": 4096, "precision": "fp8", "routing_gini": 0.0}
    without = _run(deepseek, "dgx-h800", **common)
    with_mtp = _run(deepseek, "dgx-h800", mtp=1, **common)
    assert with_mtp.step_time[0] > without.step_time[0]
    assert with_mtp.hfu[0] / with_mtp.mfu[0] > without.hfu[0] / without.mfu[0]


def test_deepseek_v3_counts(deepseek: Model) -> None:
    # 671B total, 37B active (DeepSeek-V3 report); MTP module not counted
    assert deepseek.total_params == pytest.approx(671e9, rel=0.03)
    assert deepseek.active_params == pytest.approx(37.5e9, rel=0.05)


def test_mla_context_parallel_message_does_not_shrink_with_tp(deepseek: Model) -> None:
    a = _run(deepseek, "gb200-nvl72", tp=1, cp=2, dp=32, ep=64, global_batch=64, seq_len=16384)
    b = _run(deepseek, "gb200-nvl72", tp=2, cp=2, dp=16, ep=64, global_batch=64, seq_len=16384)
    assert a.time_breakdown["cp_comm"][0] >= 0.0 and b.time_breakdown["cp_comm"][0] >= 0.0


@pytest.mark.parametrize(("fields", "field"), [
    ({"dp": 12, "ep": 12}, "ep"),  # 128 experts not divisible by 12
    ({"dp": 8, "ep": 16}, "ep"),  # ep*etp must divide tp*cp*dp = 8
    ({"dp": 16, "ep": 8, "etp": 3}, "etp"),  # folding 24 does not divide 16 ... or expert ffn 768 % 3
])
def test_bad_expert_layouts_are_refused(qwen: Model, fields: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as error:
        _plan(qwen, global_batch=48, seq_len=4096, **fields)
    assert error.value.field in ("ep", "etp")


def test_expert_settings_on_a_dense_model_are_refused() -> None:
    dense = load_model("llama3-8b")
    with pytest.raises(SpecError, match="no experts"):
        _plan(dense, dp=8, ep=8, global_batch=8, seq_len=4096)
    with pytest.raises(SpecError, match="no experts"):
        _plan(dense, dp=8, etp=2, global_batch=8, seq_len=4096)


def test_ep_outside_the_scale_up_domain_is_refused_when_required(qwen: Model) -> None:
    plan = _plan(qwen, dp=16, ep=16, global_batch=64, seq_len=4096, ep_within_scale_up=True)
    with pytest.raises(SpecError, match="scale-up domain"):
        plan.validate_placement(load_system("dgx-h100").scale_up_size)
    plan.validate_placement(load_system("gb200-nvl72").scale_up_size)  # 16 <= 72


def test_top_k_larger_than_experts_is_refused() -> None:
    with pytest.raises(ValueError, match="top_k"):
        Model(name="bad", layers=2, hidden_size=64, ffn_hidden_size=128, attention_heads=4, kv_heads=4,
              vocab_size=100, ffn_activation="swiglu", source="test",
              moe={"experts": 4, "top_k": 8, "expert_ffn_hidden_size": 32})


def test_million_token_context_with_cp_is_finite_and_attention_bound() -> None:
    model = load_model("llama3-8b")
    seq = 1 << 20
    result = _run(model, "gb200-nvl72", tp=2, cp=32, global_batch=1, seq_len=seq, recompute="full")
    assert np.isfinite(result.step_time[0]) and result.step_time[0] > 0
    assert bool(result.fits[0])
    # at 1M tokens attention dominates: full-attention FLOPs per token exceed 10x the 6N term
    assert result.hfu[0] > 0 and result.memory_breakdown["activations"][0] > 0
    no_cp = _run(model, "gb200-nvl72", tp=2, dp=32, global_batch=32, seq_len=seq // 32, recompute="full")
    assert result.step_time[0] > no_cp.step_time[0]  # the same tokens cost more at 1M context


# ---- selective recompute modules (Megatron --recompute-modules) ------------------------------
def test_recompute_modules_default_is_the_attention_core(qwen: Model) -> None:
    fields: dict[str, Any] = {"dp": 16, "ep": 16, "global_batch": 64, "seq_len": 4096}
    default = _run(qwen, **fields)
    explicit = _run(qwen, recompute_modules=("core_attn",), **fields)
    assert float(explicit.step_time[0]) == float(default.step_time[0])
    assert float(explicit.memory[0]) == float(default.memory[0])
    assert float(explicit.hfu[0]) == float(default.hfu[0])


def test_norm_and_moe_activation_recompute_trade_memory_for_memory_bound_time(qwen: Model) -> None:
    """Re-running the MoE layer's pre-FFN norm and the routed activation in backward costs their
    forward kernels (memory-bound: no FLOPs) and frees the norm output (2h bytes per token) and
    the activation output (2 bytes per routed intermediate element) in every layer."""
    from clusterplan.training.step import Hardware, _layer_forward

    fields: dict[str, Any] = {"dp": 16, "ep": 16, "global_batch": 64, "seq_len": 4096}
    none = _run(qwen, recompute="none", **fields)
    both = _run(qwen, recompute="selective", recompute_modules=("layernorm", "moe_act"), **fields)
    batch = _batch(qwen, recompute="selective", recompute_modules=("layernorm", "moe_act"), **fields)
    hardware = hardware_for(load_system("dgx-h100"))
    parts = _layer_forward(qwen, Hardware(hardware.system, hardware.chip, hardware.efficiency), batch)
    rerun = float(parts["norms"][0] + parts["moe_activation"][0])
    assert 0 < rerun < 0.2 * float(parts["elementwise"][0] + parts["gemm"][0])
    assert float(both.time_breakdown["compute"][0] - none.time_breakdown["compute"][0]) == pytest.approx(
        rerun * qwen.layers * batch.micro_batches[0], rel=1e-9)
    assert float(both.hfu[0]) == pytest.approx(float(none.hfu[0]) * float(none.step_time[0] / both.step_time[0]))
    tokens = 4096
    freed_per_layer = tokens * (2.0 * qwen.hidden_size + 2.0 * qwen.moe.top_k * qwen.moe.expert_ffn_hidden_size)
    kept = mem.activation_bytes_per_layer(qwen, _batch(qwen, recompute="none", **fields))
    assert float(kept[0] - mem.activation_bytes_per_layer(qwen, batch)[0]) == pytest.approx(freed_per_layer)


def test_norm_recompute_does_nothing_where_norms_are_fused() -> None:
    """Megatron-Core fuses a dense layer's norms into the following linear: nothing to re-run."""
    dense = load_model("llama3-8b")
    fields: dict[str, Any] = {"dp": 8, "global_batch": 64, "seq_len": 8192}
    default = _run(dense, **fields)
    norms = _run(dense, recompute_modules=("core_attn", "layernorm"), **fields)
    assert float(norms.step_time[0]) == float(default.step_time[0])
    assert float(norms.memory[0]) == float(default.memory[0])


@pytest.mark.parametrize(("fields", "rule"), [
    ({"recompute": "full", "recompute_modules": ("layernorm",)}, "only apply with recompute='selective'"),
    ({"recompute": "none", "recompute_modules": ("moe_act",)}, "only apply with recompute='selective'"),
])
def test_recompute_modules_need_selective_recompute(qwen: Model, fields: dict[str, Any], rule: str) -> None:
    with pytest.raises(SpecError, match=rule):
        _plan(qwen, dp=16, global_batch=64, seq_len=4096, **fields)


def test_moe_activation_recompute_on_a_dense_model_is_refused() -> None:
    with pytest.raises(SpecError, match="has no experts"):
        _plan(load_model("llama3-8b"), dp=8, global_batch=64, seq_len=8192, recompute_modules=("moe_act",))


def test_deduplicated_dispatch_moves_a_token_once_per_destination_node(qwen: Model) -> None:
    """EP16 over two DGX H100 nodes: a flat all-to-all sends each token's 8 routed copies, half
    of them over InfiniBand, in bf16; the de-duplicated dispatch (DeepEP/HybridEP) sends it once
    to the other node if any of its experts lives there (1 - C(64,8)/C(128,8)), fp8 with one
    fp32 scale per 128 channels in an fp8 plan; the combine returns bf16 once per node. The IB
    tier sets the time (NVLink is 9x faster), so the ratio of the two is the ratio of IB bytes."""
    from math import comb

    from clusterplan.training.step import _ep_comm_forward

    system = load_system("dgx-h100")
    hardware = hardware_for(system)
    # long sequences, so that the tiers' latency steps are negligible against the transfers
    common = {"dp": 16, "ep": 16, "global_batch": 16, "seq_len": 262144, "routing_gini": 0.0}
    overhead = 2.0 * hardware.efficiency.collective_overhead_s
    share = qwen.moe_layers / qwen.layers
    h = qwen.hidden_size

    def moved(**fields: Any) -> float:
        return float(_ep_comm_forward(qwen, hardware, _batch(qwen, **common, **fields))[0]) / share - overhead

    flat = moved(ep_dedup=False, precision="fp8")
    dedup_bf16 = moved(ep_dedup=True, precision="bf16")
    dedup_fp8 = moved(ep_dedup=True, precision="fp8")
    hit = 1.0 - comb(64, 8) / comb(128, 8)
    flat_bytes = 2 * 8 * 0.5 * h * 2.0  # dispatch and combine, 8 copies, half cross, bf16
    assert dedup_bf16 / flat == pytest.approx(2 * hit * h * 2.0 / flat_bytes, rel=1e-3)
    fp8_token = h + 4 * (h // 128)
    assert dedup_fp8 / dedup_bf16 == pytest.approx((fp8_token + 2.0 * h) / (4.0 * h), rel=1e-3)



def test_token_permutation_reads_and_writes_every_routed_copy(qwen: Model) -> None:
    """Megatron-Core's permute and unpermute pass every routed copy's bf16 hidden state through
    HBM once each way; the flat all-to-all with several local experts also sorts and unsorts the
    received chunks; the de-duplicating (flex) dispatcher does not."""
    from clusterplan.training.step import Hardware, moe_permutation_forward

    hardware = hardware_for(load_system("dgx-h100"))
    hw = Hardware(hardware.system, hardware.chip, hardware.efficiency)
    eff, chip = hw.efficiency, hw.chip
    assert qwen.moe is not None
    fields = dict(dp=16, global_batch=64, seq_len=4096, routing_gini=0.0)
    flat = _batch(qwen, ep=16, **fields)  # 128 / 16 = 8 local experts
    dedup = _batch(qwen, ep=16, ep_dedup=True, **fields)
    no_ep = _batch(qwen, ep=1, **fields)
    copies = 4096 * qwen.moe.top_k  # micro-batch 1, tp 1, balanced routing
    one_pass = 2.0 * copies * qwen.hidden_size * 2.0 / (chip.hbm_bandwidth * eff.hbm) + eff.kernel_overhead_s
    share = qwen.moe_layers / qwen.layers
    assert float(moe_permutation_forward(qwen, hw, flat)[0]) == pytest.approx(4 * one_pass * share, rel=1e-12)
    assert float(moe_permutation_forward(qwen, hw, dedup)[0]) == pytest.approx(2 * one_pass * share, rel=1e-12)
    assert float(moe_permutation_forward(qwen, hw, no_ep)[0]) == pytest.approx(2 * one_pass * share, rel=1e-12)
    dense = load_model("llama3-8b")
    assert float(moe_permutation_forward(dense, hw, _batch(dense, dp=8, global_batch=64, seq_len=4096))[0]) == 0.0


def test_grouped_gemm_pays_a_launch_per_local_expert(qwen: Model) -> None:
    """Transformer Engine's grouped GEMM runs one GEMM per local expert: each microsecond of
    per-expert cost adds 2 GEMMs x local experts x 3 passes (forward, two backward) per MoE layer
    and micro-batch, so halving EP (twice the local experts) doubles it."""
    from clusterplan.training.step import Hardware

    hardware = hardware_for(load_system("dgx-h100"))
    base_eff = hardware.efficiency.model_copy(update={"expert_gemm_overhead_s": 0.0})
    more_eff = hardware.efficiency.model_copy(update={"expert_gemm_overhead_s": 1e-6})

    def extra(ep: int) -> float:
        batch = _batch(qwen, dp=16, ep=ep, global_batch=64, seq_len=4096, routing_gini=0.0)
        base = estimate(qwen, Hardware(hardware.system, hardware.chip, base_eff), batch)
        more = estimate(qwen, Hardware(hardware.system, hardware.chip, more_eff), batch)
        return float(more.time_breakdown["compute"][0] - base.time_breakdown["compute"][0])

    micro_batches = 64 / 16
    for ep in (8, 16):
        local = 128 / ep
        assert extra(ep) == pytest.approx(1e-6 * 2 * local * 3 * qwen.moe_layers * micro_batches, rel=1e-9)
