"""The inference step estimator (issue #7): KV sizes, step costs and the analytic steady state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.inference.step import Deployment, ReplicaModel, kv_bytes_per_token, padded


def replica(model: str = "llama3-70b", system: str = "dgx-h100", **deployment: object) -> ReplicaModel:
    return ReplicaModel(load_model(model), hardware_for(load_system(system)), Deployment(**deployment))  # type: ignore[arg-type]


def test_kv_bytes_per_token_gqa_and_mla() -> None:
    # Llama-3 70B: 80 layers x 8 KV heads x 128 dims x (K and V) x 2 bytes = 320 KiB per token.
    assert kv_bytes_per_token(load_model("llama3-70b"), "bf16") == 80 * 8 * 128 * 2 * 2
    assert kv_bytes_per_token(load_model("llama3-70b"), "fp8") == 80 * 8 * 128 * 2
    # DeepSeek-V3 MLA: 61 layers x (512 latent + 64 rope) x 2 bytes = 70,272 bytes per token.
    assert kv_bytes_per_token(load_model("deepseek-v3"), "bf16") == 61 * (512 + 64) * 2


def test_single_sequence_decode_is_bounded_by_reading_the_weights() -> None:
    r = replica(tp=8, weights="fp8", kv_cache="fp8")
    chip = r.hardware.chip
    eff = r.hardware.efficiency
    floor = r.weight_bytes_per_chip / chip.hbm_bandwidth
    step = r.decode_time(1, 1000)
    # 80 layers x 4 GEMMs + the LM head, each a kernel; two all-reduces per layer
    fixed = 321 * eff.kernel_overhead_s + float(r._tp_time(1.0)) + eff.inference_step_overhead_s
    assert floor + fixed < step < 3 * floor + fixed


def test_decode_time_grows_with_batch_and_context() -> None:
    r = replica(tp=8, weights="fp8", kv_cache="fp8")
    assert r.decode_time(64, 64_000) < r.decode_time(256, 256_000)
    assert r.decode_time(64, 64_000) < r.decode_time(64, 640_000)


def test_prefill_is_compute_bound_and_superlinear_in_prompt_length() -> None:
    r = replica(tp=8, weights="fp8", kv_cache="fp8")
    short, long = r.prefill_time(4096, 0), r.prefill_time(32_768, 0)
    assert long > 8 * short * 0.9  # matmuls scale linearly, causal attention quadratically
    flops = 2.0 * r.model.active_params * 32_768 / r.deployment.chips
    assert long > flops / r.hardware.chip.peak_flops["fp8"]


def test_mixed_step_costs_no_more_than_the_two_steps_apart() -> None:
    r = replica(tp=8, weights="fp8", kv_cache="fp8")
    mixed = r.mixed_time(2048, 0, 128, 128_000)
    assert max(r.prefill_time(2048, 0), r.decode_time(128, 128_000)) <= mixed
    assert mixed <= r.prefill_time(2048, 0) + r.decode_time(128, 128_000)


def test_more_tensor_parallelism_holds_more_kv_cache() -> None:
    assert replica(tp=4, weights="fp8").kv_capacity_tokens < replica(tp=8, weights="fp8").kv_capacity_tokens


def test_weights_that_do_not_fit_name_the_field() -> None:
    with pytest.raises(SpecError, match="tp"):
        replica("llama3-405b", tp=1, weights="bf16")


def test_deployment_rules() -> None:
    with pytest.raises(SpecError, match="attention_heads"):
        replica(tp=3)
    with pytest.raises(SpecError, match="no experts"):
        replica(tp=8, ep=2)


@settings(max_examples=30, deadline=None)
@given(isl=st.integers(16, 20_000), osl=st.integers(1, 4_000))
def test_offline_throughput_is_positive_and_batch_within_limits(isl: int, osl: int) -> None:
    r = replica(tp=8, weights="fp8", kv_cache="fp8")
    out = r.offline_throughput(isl, osl)
    batch = float(out["batch"])
    assert 1 <= batch <= r.max_batch
    assert batch * (isl + osl) <= r.kv_capacity_tokens or batch == 1
    assert math.isfinite(float(out["output_tokens_per_s"])) and float(out["output_tokens_per_s"]) > 0


def test_offline_throughput_is_vectorised() -> None:
    r = replica(tp=8, weights="fp8", kv_cache="fp8")
    shapes = np.array([128, 1000, 5000]), np.array([2048, 1000, 500])
    together = r.offline_throughput(*shapes)["output_tokens_per_s"]
    apart = [float(r.offline_throughput(i, o)["output_tokens_per_s"]) for i, o in zip(*shapes, strict=True)]
    np.testing.assert_allclose(together, apart)


def _efficiency(r: ReplicaModel, **update: float) -> ReplicaModel:
    eff = r.hardware.efficiency.model_copy(update=update)
    hw = type(r.hardware)(system=load_system("dgx-h100"), chip=r.hardware.chip, efficiency=eff)
    return ReplicaModel(r.model, hw, r.deployment)


def test_single_token_decode_reads_each_layer_weight_and_the_head_once() -> None:
    # Llama-3 8B, TP1, bf16, one sequence with an empty cache: every GEMM is weight-read bound.
    # Per layer: QKV 4096x(4096+2*1024), O 4096x4096, gate+up 4096x(2*14336), down 14336x4096
    # = 4096*53248 weights; 32 layers + LM head 4096x128256 (the embedding is a gather, not read):
    # (32*4096*53248 + 4096*128256) * 2 bytes = 15.009 GB at 0.8 of 3.35 TB/s = 5.600 ms, plus
    # 32*4 + 1 = 129 GEMM kernels at 10 us and the 0.5 ms step overhead: 6.890 ms. (One token's
    # activations and elementwise kernels add ~0.03 %.)
    r = _efficiency(replica("llama3-8b", tp=1), inference_hbm=0.8, kernel_overhead_s=1e-5, matmul_dim_half=0.0,
                    inference_step_overhead_s=5e-4)
    weights = (32 * 4096 * 53248 + 4096 * 128256) * 2.0
    expected = weights / (3.35e12 * 0.8) + 129 * 1e-5 + 5e-4
    assert r.decode_time(1, 0) == pytest.approx(expected, rel=1e-3)


def test_decode_step_adds_compute_bound_gemms_and_kv_bound_attention() -> None:
    # A large batch: the GEMMs are compute-bound, attention reads the KV cache, the elementwise
    # kernels stream the activations; the kernels run one after the other, so the step is their
    # sum, not max(total compute, total memory). An fp8 checkpoint keeps its LM head in bf16.
    r = _efficiency(replica("llama3-8b", tp=1, weights="fp8", kv_cache="fp8"), kernel_overhead_s=0.0,
                    matmul_dim_half=0.0, inference_step_overhead_s=0.0, inference_hbm=0.8)
    batch, context = 1024, 1024 * 1500
    layer_weights = 32 * 4096 * 53248
    gemm_compute = 2.0 * layer_weights * batch / (1978.9e12 * r.hardware.efficiency.matmul["fp8"])
    head = 2.0 * 4096 * 128256 * batch / (989.4e12 * r.hardware.efficiency.matmul["bf16"])
    kv_read = context * 32 * 8 * 128 * 2 * 1.0 / (3.35e12 * 0.8)
    # per layer and token: norms and residual adds 10 x 4096, rope 2 x (4096 + 1024), SwiGLU 3 x 14336
    elementwise = 2.0 * batch * (10 * 4096 + 2 * (4096 + 1024) + 3 * 14336) * 32 / (3.35e12 * 0.8)
    expected = gemm_compute + head + kv_read + elementwise
    assert r.decode_time(batch, context) == pytest.approx(expected, rel=0.01)


def test_moe_decode_reads_only_the_experts_its_tokens_hit() -> None:
    # Qwen3-235B-A22B: one token picks top_k = 8 of 128 experts; 128 * (1 - (127/128)**8) = 7.785
    # distinct experts on average. A 4096-token step hits all of them.
    r = replica("qwen3-235b-a22b", tp=8, ep=8, weights="fp8", kv_cache="fp8")
    one, many = r.decode_time(1, 0), r.decode_time(4096, 0)
    assert one < 0.5 * many
    moe = r.model.moe
    assert moe is not None
    # Routed-expert weights read by one token on one EP rank (16 local experts, etp 1): the
    # expected 7.78/8 of an expert per rank, each expert 3 x 4096 x 1536 fp8 bytes.
    hit_per_rank = 128 * (1 - (127 / 128) ** 8) / 8
    assert hit_per_rank == pytest.approx(0.9731, abs=1e-4)
    r0 = _efficiency(r, kernel_overhead_s=0.0, moe_layer_overhead_s=0.0, inference_hbm=1.0)
    routed = float(r0._moe_ffn_time(np.array(1.0)))
    expert_bytes = 3 * 4096 * 1536 * 1.0
    router_bytes = 4096 * 128 * 2.0  # the router gate stays bf16 (ModelOpt leaves it unquantized)
    assert routed == pytest.approx((hit_per_rank * expert_bytes + router_bytes) / 3.35e12, rel=0.01)


def test_a_pipeline_step_visits_its_stages_in_turn() -> None:
    """PP halves each chip's layers but a micro-batch crosses both stages: one token alone takes
    about as long as on the TP-only replica (plus a stage hop), not half as long."""
    from clusterplan.catalog import hardware_for, load_model, load_system
    from clusterplan.inference.step import Deployment, ReplicaModel

    model, hw = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    flat = ReplicaModel(model, hw, Deployment(tp=4))
    piped = ReplicaModel(model, hw, Deployment(tp=4, pp=2))
    assert piped.engines == 2 and flat.engines == 1
    ratio = piped.decode_time(1, 1000) / flat.decode_time(1, 1000)
    assert 0.95 < ratio < 1.15
    # Twice the chips hold twice the KV, split between the two micro-batches in flight.
    assert abs(piped.kv_capacity_tokens * piped.engines / flat.kv_capacity_tokens - 2.0) < 0.15
    # Both engines run at once: saturated throughput counts both.
    one_engine = piped.engines * piped.max_batch
    steady = piped.offline_throughput(1000, 200)
    assert float(steady["batch"]) <= one_engine
    assert float(steady["output_tokens_per_s"]) > 1.5 * float(flat.offline_throughput(1000, 200)["output_tokens_per_s"])


def test_the_simulator_serves_a_pipeline_replica_as_its_engines() -> None:
    from clusterplan.catalog import hardware_for, load_model, load_system
    from clusterplan.inference.serving import simulate
    from clusterplan.inference.step import Deployment, ReplicaModel
    from clusterplan.inference.workload import offline

    model, hw = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    piped = ReplicaModel(model, hw, Deployment(tp=4, pp=2, max_batch=4))

    class OneEngine:  # the same replica with one micro-batch in flight
        engines = 1
        kv_capacity_tokens, max_batch = piped.kv_capacity_tokens, piped.max_batch
        prefill_time, decode_time = piped.prefill_time, piped.decode_time
        mixed_time, kv_transfer_time = piped.mixed_time, piped.kv_transfer_time

    both = simulate(piped, offline(64, 200, 20))
    alone = simulate(OneEngine(), offline(64, 200, 20))
    assert both.replicas == 1 and both.stats["max_concurrent_sequences"] == 4  # per engine
    assert 1.8 < both.output_tokens_per_s / alone.output_tokens_per_s < 2.2


def test_static_shape_buckets_pad_whole_prompts_and_decode_attention() -> None:
    assert padded(10_000, (2048, 4096, 8192, 12288)) == 12288
    assert padded(4096, (2048, 4096)) == 4096 and padded(5000, (2048, 4096)) == 5000  # past the largest
    model, hardware = load_model("llama3-70b"), hardware_for(load_system("trn2"))
    plain = ReplicaModel(model, hardware, Deployment(tp=16))
    bucketed = ReplicaModel(model, hardware, Deployment(tp=16, prefill_buckets=(2048, 4096, 8192, 12288),
                                                        decode_buckets=(12800,)))
    assert bucketed.prefill_time(10_000, 0) == pytest.approx(plain.prefill_time(12_288, 0))
    assert bucketed.prefill_time(500, 10_000) == pytest.approx(plain.prefill_time(500, 10_000))  # a continuation
    assert bucketed.decode_time(1, 10_750) == pytest.approx(plain.decode_time(1, 12_800))
    assert bucketed.step_terms() is None and plain.step_terms() is not None  # padding is not separable


def test_buckets_must_be_positive_and_increasing() -> None:
    for bad in ((4096, 2048), (0, 2048), (2048, 2048)):
        with pytest.raises(ValidationError, match="strictly increasing"):
            Deployment(prefill_buckets=bad)


def test_quantised_checkpoints_keep_the_embedding_and_lm_head_in_bf16() -> None:
    """ModelOpt FP8/NVFP4 quantise the transformer blocks' linear layers only: Llama-3 70B fp8 is
    68.5 G weights at 1 byte plus 2 x 1.05 G (embedding, LM head) at 2 bytes = 72.7 GB."""
    from clusterplan.inference.step import weight_bytes

    model = load_model("llama3-70b")
    kept = 2 * 128256 * 8192
    assert weight_bytes(model, "fp8") == pytest.approx((model.total_params - kept) + 2.0 * kept)
    assert weight_bytes(model, "bf16") == pytest.approx(2.0 * model.total_params)
    assert replica(tp=1, weights="fp8").weight_bytes_per_chip == pytest.approx(weight_bytes(model, "fp8"))


def test_an_fp8_kv_cache_runs_attention_at_the_fp8_peak() -> None:
    # bf16 weights both times, so only the fused attention differs; an empty cache: no KV read.
    bf16 = replica("llama3-8b", tp=1, kv_cache="bf16")
    fp8 = replica("llama3-8b", tp=1, kv_cache="fp8")
    tokens = 32_768
    flops = 4.0 * tokens * (tokens / 2.0) * 4096 * 32
    attention_bf16 = flops / (989.4e12 * bf16.hardware.efficiency.attention)
    # fp8 peak 1978.9 TFLOP/s against 989.4: half the time, to 5e-5
    assert bf16.prefill_time(tokens, 0) - fp8.prefill_time(tokens, 0) == pytest.approx(attention_bf16 / 2, rel=1e-4)


def test_a_finite_offline_run_ends_with_a_partial_wave() -> None:
    r = replica(tp=8, weights="fp8", kv_cache="fp8")
    steady = r.offline_throughput(128, 2048)
    batch = float(steady["batch"])
    rate = float(steady["output_tokens_per_s"])
    # whole waves: the steady state; one request more adds a wave of one sequence: 2048 steps
    # of a one-sequence decode (as long as one request alone takes)
    assert float(r.offline_throughput(128, 2048, 3 * batch)["output_tokens_per_s"]) == pytest.approx(rate)
    alone = float(r.offline_throughput(128, 2048, 1)["output_tokens_per_s"])
    one_more = float(r.offline_throughput(128, 2048, 3 * batch + 1)["output_tokens_per_s"])
    assert one_more == pytest.approx((3 * batch + 1) * 2048 / (3 * batch * 2048 / rate + 2048 / alone))
    assert one_more < 0.96 * rate
    long_run = float(r.offline_throughput(128, 2048, 1000 * batch + 1)["output_tokens_per_s"])
    assert long_run == pytest.approx(rate, rel=1e-3)
    shapes = np.array([128, 2048]), np.array([2048, 128]), np.array([3000, 3000])
    together = r.offline_throughput(*shapes)["output_tokens_per_s"]
    apart = [float(r.offline_throughput(i, o, n)["output_tokens_per_s"]) for i, o, n in zip(*shapes, strict=True)]
    np.testing.assert_allclose(together, apart)


def test_moe_rows_are_expanded_and_gathered_through_hbm(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused MoE kernels copy each routed row out before the experts and gather-reduce it
    after: two passes, each reading and writing the bf16 hidden state of every row the busiest
    rank receives (4096 tokens x top-8 over 8 EP ranks: 4096 rows, times the busiest rank's excess
    under the deployment's routing skew)."""
    import clusterplan.inference.step as inference_step
    from clusterplan.inference.step import expected_max_rank_load

    r = _efficiency(replica("qwen3-235b-a22b", tp=8, ep=8, weights="fp8", kv_cache="fp8"),
                    kernel_overhead_s=0.0, moe_layer_overhead_s=0.0, inference_hbm=1.0)
    tokens = np.array(4096.0)
    with_copies = float(r._moe_ffn_time(tokens))
    monkeypatch.setattr(inference_step, "permutation_bytes", lambda *args, **kwargs: 0.0)
    without = float(r._moe_ffn_time(tokens))
    rows = float(expected_max_rank_load(tokens, 8, 128, 8, r.deployment.routing_gini))
    assert rows == pytest.approx(4096.0, rel=0.25)
    assert with_copies - without == pytest.approx(2 * 2 * rows * 4096 * 2.0 / 3.35e12, rel=1e-9)


def test_mla_decodes_in_the_weight_absorbed_form() -> None:
    """DeepSeek-V3 prompts attend with 192-dim QK and 128-dim V heads (81,920 FLOPs per pair and
    layer); decoding sequences attend each head's query against the cached 512 + 64 latent and
    produce 512 values (278,528): 3.4x the FLOPs; the prompt's at the fused attention's rate in
    the cache's format, the decode's at FlashMLA's measured share of the bf16 peak. GQA models
    decode as they prefill."""
    from clusterplan.inference.step import MLA_DECODE_FRACTION

    r = replica("deepseek-v3", system="dgx-h200", tp=8, weights="fp8", kv_cache="fp8")
    flops_ratio = (2 * 128 * (576 + 512)) / (2 * 128 * (192 + 128))
    assert flops_ratio == pytest.approx(278_528 / 81_920)
    decode_flops = 2 * 128 * (576 + 512) * 61 / 8
    assert r.seconds_per_decode_pair == pytest.approx(
        decode_flops / (float(r.hardware.peak[1]) * MLA_DECODE_FRACTION), rel=1e-9)
    assert r.seconds_per_decode_pair > flops_ratio * r.seconds_per_pair  # bf16 decode, fp8 prompt
    llama = replica("llama3-70b", tp=4)
    assert llama.seconds_per_decode_pair == llama.seconds_per_pair
    # A decode step's FLOP-bound attention uses the decode rate: 64 sequences x 4,000 keys.
    keys = 64 * 4000.0
    base = float(r.token_time(64.0) + r.sequence_time(64.0))
    attention = max(r.seconds_per_decode_pair * keys, r.seconds_per_kv_token * keys)
    assert float(r.decode_time(64, keys)) == pytest.approx(base + attention, rel=1e-12)
