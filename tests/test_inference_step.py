"""The inference step estimator (issue #7): KV sizes, step costs and the analytic steady state."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.inference.step import Deployment, ReplicaModel, kv_bytes_per_token


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
    floor = r.weight_bytes_per_chip / chip.hbm_bandwidth
    step = r.decode_time(1, 1000)
    assert floor < step < 3 * floor + r.hardware.efficiency.inference_step_overhead_s + 2e-3


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
