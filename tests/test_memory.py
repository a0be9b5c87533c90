"""Memory against hand-computed values (Megatron theoretical memory, Korthikanti et al. 2022)."""

from __future__ import annotations

import pytest

from clusterplan.specs import Model, Plan
from clusterplan.training import memory as mem
from clusterplan.training.batch import PlanBatch


def _batch(model: Model, **plan: object) -> PlanBatch:
    return PlanBatch.from_plans([Plan(**plan).validate_for(model)], model)  # type: ignore[arg-type]


def test_parameter_count_of_gpt_22b(gpt22b: Model) -> None:
    # 12*L*h^2 (attention 4h^2 + FFN 8h^2) + 2h norms per layer + V*h tied embedding + final norm
    h, layers, vocab = 6144, 48, 51200
    expected = layers * (12 * h * h + 2 * h) + vocab * h + h
    assert gpt22b.total_params == expected


def test_model_state_is_18_bytes_per_param_without_distributed_optimizer(gpt22b: Model) -> None:
    # Megatron-LM's bf16 default: fp32 gradient buffer (grad_reduce_in_fp32).
    batch = _batch(gpt22b, global_batch=8, seq_len=2048, zero=0, dp=1, grad_reduce="fp32")
    params = mem.stage_params(gpt22b, batch).worst
    state = mem.model_state_bytes(params, batch, mem.layer_params_per_chip(gpt22b, batch))
    total = state["weights"] + state["gradients"] + state["optimizer"]
    assert float(params[0]) == gpt22b.total_params  # embeddings and final norm included
    assert float(total[0]) == pytest.approx(18 * gpt22b.total_params)


def test_distributed_optimizer_is_6_plus_12_over_dp(gpt22b: Model) -> None:
    batch = _batch(gpt22b, global_batch=8, seq_len=2048, zero=1, dp=8, grad_reduce="fp32")
    params = mem.stage_params(gpt22b, batch).worst
    state = mem.model_state_bytes(params, batch, mem.layer_params_per_chip(gpt22b, batch))
    total = float((state["weights"] + state["gradients"] + state["optimizer"])[0])
    assert total == pytest.approx((6 + 12 / 8) * gpt22b.total_params)


def test_bf16_moments_make_adam_state_8_bytes(gpt22b: Model) -> None:
    """Megatron-Core's precision-aware optimizer with bf16 moments: fp32 master (4 B) and two
    2-byte moments, 8 B per parameter instead of 12, sharded the same way; weights and
    gradients do not move."""
    states = {}
    for moments in ("fp32", "bf16"):
        batch = _batch(gpt22b, global_batch=8, seq_len=2048, zero=1, dp=8, optimizer_moments=moments)
        params = mem.stage_params(gpt22b, batch).worst
        states[moments] = mem.model_state_bytes(params, batch, mem.layer_params_per_chip(gpt22b, batch))
    assert float(states["fp32"]["optimizer"][0]) == pytest.approx(12 / 8 * gpt22b.total_params)
    assert float(states["bf16"]["optimizer"][0]) == pytest.approx(8 / 8 * gpt22b.total_params)
    for part in ("weights", "gradients"):
        assert float(states["bf16"][part][0]) == float(states["fp32"][part][0])


def test_tp_and_pp_shard_parameters_with_embedding_on_first_stage(gpt22b: Model) -> None:
    batch = _batch(gpt22b, tp=8, pp=4, global_batch=8, seq_len=2048)
    h, vocab = 6144, 51200
    per_layer = (12 * h * h + 2 * h) / 8
    stages = mem.stage_params(gpt22b, batch)
    assert float(stages.first[0]) == pytest.approx(12 * per_layer + vocab * h / 8)
    # tied embeddings: the last stage holds its own copy of the output matrix, and the final norm
    assert float(stages.last[0]) == pytest.approx(12 * per_layer + vocab * h / 8 + h)


def test_korthikanti_activations_tensor_parallel_without_sp(gpt22b: Model) -> None:
    s, b, h, a, t = 2048, 1, 6144, 64, 8
    batch = _batch(gpt22b, tp=t, global_batch=1, seq_len=s, recompute="none", sp=False,
                   flash_attention=False)
    expected = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))  # Korthikanti eq. (2)
    assert float(mem.activation_bytes_per_layer(gpt22b, batch)[0]) == pytest.approx(expected)


def test_korthikanti_activations_sp_and_selective_is_34sbh_over_t(gpt22b: Model) -> None:
    s, b, h, t = 2048, 4, 6144, 8
    batch = _batch(gpt22b, tp=t, micro_batch=b, global_batch=b, seq_len=s, recompute="selective",
                   sp=True, flash_attention=False)
    assert float(mem.activation_bytes_per_layer(gpt22b, batch)[0]) == pytest.approx(34 * s * b * h / t)


def test_full_recompute_stores_layer_inputs_for_all_in_flight_microbatches(gpt22b: Model) -> None:
    s, h, t, p = 2048, 6144, 8, 4
    batch = _batch(gpt22b, tp=t, pp=p, global_batch=16, seq_len=s, recompute="full", sp=True)
    acts = mem.activation_bytes(gpt22b, batch)
    layers_first = 48 // p
    one_layer_full = float(mem.activation_bytes_per_layer(gpt22b, batch)[0])
    # p micro-batches in flight on the first stage (1F1B), each keeping 2sbh/t per layer, plus
    # the embedding output (s*b*h/t each) and one re-materialised layer.
    expected = layers_first * p * 2 * s * h / t + p * s * h / t + one_layer_full
    assert float(acts["first"][0]) == pytest.approx(expected)


def test_interleaving_adds_the_megatron_memory_penalty(gpt22b: Model) -> None:
    # pp 4, vp 2, 16 micro-batches: Megatron-Core's first rank runs 2 (pp - 1) + (vp - 1) pp = 10
    # warm-up forwards, groups of pp micro-batches per chunk, and holds 11 chunk forwards at its
    # peak: 7 of chunk 0 (one embedding output each) and 4 of chunk 1, of 6 layers each; that is
    # Korthikanti et al.'s pp * (1 + (pp - 1)/(pp vp)) = 5.5 stages of 12 layers.
    common = {"tp": 8, "pp": 4, "global_batch": 16, "seq_len": 2048, "recompute": "selective"}
    plain = mem.activation_bytes(gpt22b, _batch(gpt22b, **common))["first"][0]
    interleaved = mem.activation_bytes(gpt22b, _batch(gpt22b, vp=2, **common))["first"][0]
    layer = 34 * 2048 * 6144 / 8
    embedding = 2048 * 6144 / 8
    penalty = 1 + (4 - 1) / (4 * 2)
    assert float(plain) == pytest.approx(12 * 4 * layer + 4 * embedding)
    assert float(interleaved) == pytest.approx(12 * 4 * penalty * layer + 7 * embedding)


def test_the_last_rank_of_an_interleaved_pipeline_holds_a_chunk_per_warmup_forward(gpt22b: Model) -> None:
    # The last rank runs (vp - 1) pp = 4 warm-up forwards (none without interleaving), so it
    # holds 5 chunk forwards of 6 layers, not one 12-layer stage as under 1F1B.
    common = {"tp": 8, "pp": 4, "global_batch": 16, "seq_len": 2048, "recompute": "selective"}
    layer = 34 * 2048 * 6144 / 8
    logits = mem.logit_bytes(gpt22b, _batch(gpt22b, **common))[0]
    plain = mem.activation_bytes(gpt22b, _batch(gpt22b, **common))["last"][0]
    interleaved = mem.activation_bytes(gpt22b, _batch(gpt22b, vp=2, **common))["last"][0]
    assert float(plain - logits) == pytest.approx(12 * layer)
    assert float(interleaved - logits) == pytest.approx(5 * 6 * layer)


def test_an_embedding_aware_split_holds_its_light_first_chunk_most_often(gpt22b: Model) -> None:
    # 46 layers over pp 4 x vp 2 with the embedding and loss counted as layers (Megatron's
    # account_for_embedding/loss_in_pipeline_split): chunks of 6, the first rank 5 + 6 and the
    # last 6 + 5. The first rank's 11 held forwards are 7 of its 5-layer chunk 0 and 4 of chunk
    # 1: 59 layers, where spreading its 11 layers evenly over the chunks would give 60.5.
    model = gpt22b.model_copy(update={"layers": 46})
    batch = _batch(model, tp=8, pp=4, vp=2, global_batch=16, seq_len=2048, recompute="selective",
                   first_stage_layers=11, last_stage_layers=11)
    layer = 34 * 2048 * 6144 / 8
    embedding = 2048 * 6144 / 8
    acts = mem.activation_bytes(model, batch)
    assert float(acts["first"][0]) == pytest.approx((7 * 5 + 4 * 6) * layer + 7 * embedding)
    logits = mem.logit_bytes(model, batch)[0]
    assert float(acts["last"][0] - logits) == pytest.approx((4 * 6 + 1 * 5) * layer)


def test_fewer_microbatches_than_stages_hold_fewer_activations(gpt22b: Model) -> None:
    few = mem.activation_bytes(gpt22b, _batch(gpt22b, pp=4, global_batch=2, seq_len=2048))["first"][0]
    many = mem.activation_bytes(gpt22b, _batch(gpt22b, pp=4, global_batch=8, seq_len=2048))["first"][0]
    assert float(many) == pytest.approx(2 * float(few))


def test_zero3_shards_weights(llama_like: Model) -> None:
    z1 = _batch(llama_like, dp=64, global_batch=64, seq_len=4096, zero=1)
    z3 = _batch(llama_like, dp=64, global_batch=64, seq_len=4096, zero=3)
    params = mem.stage_params(llama_like, z1).worst
    layer = mem.layer_params_per_chip(llama_like, z1)
    s1 = mem.model_state_bytes(params, z1, layer)
    s3 = mem.model_state_bytes(params, z3, layer)
    assert float(s3["weights"][0]) == pytest.approx(float(params[0]) * 2 / 64 + 2 * float(layer[0]) * 2)
    assert float(s3["gradients"][0]) == pytest.approx(float(s1["gradients"][0]) / 64)


# ---- issue 13: memory as a validation metric (every published run fits) ----------------------


def test_gradient_buffer_has_the_reduction_dtype(gpt22b: Model) -> None:
    # Megatron-Core DDP: fp32 grad buffer only with grad_reduce_in_fp32, else bf16 (2 B):
    # bf16 weights 2 + bf16 grads 2 + Adam 12/d.
    batch = _batch(gpt22b, global_batch=8, seq_len=2048, zero=1, dp=8, grad_reduce="bf16")
    params = mem.stage_params(gpt22b, batch).worst
    state = mem.model_state_bytes(params, batch, mem.layer_params_per_chip(gpt22b, batch))
    assert float(state["gradients"][0]) == pytest.approx(2 * gpt22b.total_params)
    total = float((state["weights"] + state["gradients"] + state["optimizer"])[0])
    assert total == pytest.approx((2 + 2 + 12 / 8) * gpt22b.total_params)


@pytest.mark.parametrize(("fp8_params", "weight_bytes"), [(False, 3.0), (True, 2.0)])
def test_fp8_weights_are_counted_once(gpt22b: Model, fp8_params: bool, weight_bytes: float) -> None:
    # bf16 weights + the 1 B fp8 copy, or fp8 parameters alone (fp8 + columnwise copy, 1 B each).
    batch = _batch(gpt22b, global_batch=8, seq_len=2048, zero=0, precision="fp8", fp8_params=fp8_params)
    params = mem.stage_params(gpt22b, batch).worst
    state = mem.model_state_bytes(params, batch, mem.layer_params_per_chip(gpt22b, batch))
    assert float(state["weights"][0]) == pytest.approx(weight_bytes * gpt22b.total_params)


def test_fp8_plans_keep_gemm_inputs_in_fp8(gpt22b: Model) -> None:
    # SP + flash attention, no recompute, per token and layer (q = h, ffn = 4h, MHA):
    # bf16: norm inputs 4h + QKV/FC1 inputs 4h + dropout masks 2h, Q 2h, attention output 2h,
    #       FC1 output 8h, FC2 input 8h, K and V 4h -> 34h/t (Korthikanti's SP+selective form).
    # fp8: QKV/FC1 inputs 1 B (2h), attention output 2h bf16 (flash) + 1h fp8 copy, FC2 input 4h
    #       -> 4h + 2h + 2h + 2h + 3h + 8h + 4h + 4h = 29h/t.
    s, b, h, t = 2048, 2, 6144, 8
    common = {"tp": t, "micro_batch": b, "global_batch": b, "seq_len": s, "recompute": "none"}
    bf16 = mem.activation_bytes_per_layer(gpt22b, _batch(gpt22b, **common))
    fp8 = mem.activation_bytes_per_layer(gpt22b, _batch(gpt22b, precision="fp8", **common))
    fp4 = mem.activation_bytes_per_layer(gpt22b, _batch(gpt22b, precision="fp4", **common))
    assert float(bf16[0]) == pytest.approx(34 * s * b * h / t)
    assert float(fp8[0]) == pytest.approx(29 * s * b * h / t)
    # NVFP4 inputs: 0.5625 B instead of 1 B on the 2h + 1h + 4h fp8 terms.
    assert float(fp4[0]) == pytest.approx((29 - 7 * (1 - 0.5625)) * s * b * h / t)


def test_logits_are_fp32_or_fused_bf16_and_chunked(llama_like: Model) -> None:
    s, b, vocab = 4096, 1, 128256
    common = {"global_batch": 1, "seq_len": s}
    plain = mem.activation_bytes(llama_like, _batch(llama_like, **common))
    fused = mem.activation_bytes(llama_like, _batch(llama_like, fused_cross_entropy=True, **common))
    tiled = mem.activation_bytes(llama_like, _batch(llama_like, loss_chunks=8, **common))
    # pp = 1: the last-stage figure is the first-stage one plus the logits.
    assert float((plain["last"] - plain["first"])[0]) == pytest.approx(s * b * vocab * 4)
    assert float((fused["last"] - fused["first"])[0]) == pytest.approx(s * b * vocab * 2)
    assert float((tiled["last"] - tiled["first"])[0]) == pytest.approx(s * b * vocab * 4 / 8)


def test_offloaded_layers_leave_device_memory(llama_like: Model) -> None:
    # Transformer Engine's offload schedule: peak = (layers - offloaded) x one layer's activations.
    common = {"global_batch": 2, "seq_len": 4096, "recompute": "none"}
    base = _batch(llama_like, **common)
    layer = float(mem.activation_bytes_per_layer(llama_like, base)[0])
    kept = mem.activation_bytes(llama_like, base)["first"][0]
    offloaded = mem.activation_bytes(llama_like, _batch(llama_like, offload_layers=20, **common))["first"][0]
    assert float(kept - offloaded) == pytest.approx(20 * layer)


def test_elementwise_recompute_keeps_projection_outputs(llama_like: Model) -> None:
    # MaxText 'minimal': per token, layer input + attention and FFN output-projection outputs
    # (3 x 2h), Q (2q), K and V (4kv over min(t, kv_heads)), SwiGLU up-projections (2 x 2ffn).
    h, q, kv, ffn, t, s = 4096, 4096, 1024, 14336, 4, 2048
    batch = _batch(llama_like, tp=t, global_batch=1, seq_len=s,
                   recompute_modules=("core_attn", "elementwise"))
    expected = s * ((6 * h + 2 * q + 4 * ffn) / t + 4 * kv / t)
    assert float(mem.activation_bytes_per_layer(llama_like, batch)[0]) == pytest.approx(expected)


@pytest.mark.parametrize(("tp", "expected"), [(1, 0.0), (2, 2 * 4096 * 4096 * 2.0)])
def test_tp_buffers_only_with_a_tp_group(llama_like: Model, tp: int, expected: float) -> None:
    batch = _batch(llama_like, tp=tp, global_batch=1, seq_len=4096)
    assert float(mem.memory_breakdown(llama_like, batch, 0.0)["buffers"][0]) == pytest.approx(expected)


@pytest.mark.parametrize(("plan", "field"), [
    ({"precision": "bf16", "fp8_params": True}, "fp8_params"),
    ({"pp": 2, "offload_layers": 4}, "offload_layers"),
    ({"offload_layers": 32}, "offload_layers"),
])
def test_memory_settings_are_validated(llama_like: Model, plan: dict[str, object], field: str) -> None:
    from clusterplan.errors import SpecError

    with pytest.raises(SpecError, match=field):
        Plan(global_batch=8, seq_len=4096, **plan).validate_for(llama_like)  # type: ignore[arg-type]


def _small_moe() -> Model:
    """Every layer a top-2 of 8 SwiGLU experts (Mixtral-like, small): h 1024, 8 heads of 128, 2 KV."""
    return Model(name="moe-test", layers=4, hidden_size=1024, ffn_hidden_size=4096, attention_heads=8, kv_heads=2,
                 vocab_size=32000, ffn_activation="swiglu",
                 moe={"experts": 8, "top_k": 2, "expert_ffn_hidden_size": 2048}, source="test fixture")


@pytest.mark.parametrize(("modules", "per_token"), [
    # attn_norm and mlp_norm: each norm's bf16 input (2h); qkv_linear: the QKV input (the norm
    # output, 2h in bf16); core_attn: Q (2q) and K, V (4kv); attn_proj: the attention output
    # (2q, flash attention's bf16 copy); expert_fc1: the routed tokens (top_k x 2h); moe_act: the
    # experts' gate and up outputs (top_k x 2 x 2f).
    (("attn_norm",), 2 * 1024), (("mlp_norm",), 2 * 1024), (("qkv_linear",), 2 * 1024),
    (("core_attn",), 2 * 1024 + 4 * 256), (("core_attn", "attn_proj"), 2 * 1024 + 4 * 256 + 2 * 1024),
    (("expert_fc1",), 2 * 2 * 1024), (("moe_act",), 2 * 2 * 2 * 2048),
])
def test_offloaded_modules_leave_their_inputs_on_the_host(modules: tuple[str, ...], per_token: int) -> None:
    """Megatron-Core's fine-grained activation offloading (``--offload-modules``): each named
    submodule's input leaves device memory, nothing else does (bf16 plan, TP1, no recompute)."""
    model = _small_moe()
    common = {"global_batch": 1, "seq_len": 2048, "recompute": "none", "ep": 1}
    kept = float(mem.activation_bytes_per_layer(model, _batch(model, **common))[0])
    offloaded = float(mem.activation_bytes_per_layer(model, _batch(model, offload_modules=modules, **common))[0])
    assert kept - offloaded == pytest.approx(2048 * per_token)


@pytest.mark.parametrize(("plan", "rule"), [
    ({"offload_modules": ("attn_proj",)}, "needs core_attn"),
    ({"offload_modules": ("expert_fc1",), "model": "dense"}, "has no experts"),
    ({"offload_modules": ("moe_act", "moe_act")}, "twice"),
    ({"offload_modules": ("attn_norm",), "recompute": "full"}, "nothing is left to offload"),
    ({"offload_modules": ("expert_fc1",), "recompute_modules": ("moe",)}, "whole MoE layer"),
    ({"offload_modules": ("attn_norm",), "recompute_modules": ("core_attn", "elementwise")}, "elementwise"),
])
def test_offloaded_modules_are_refused_where_megatron_refuses_them(llama_like: Model, plan: dict[str, object],
                                                                     rule: str) -> None:
    from clusterplan.errors import SpecError

    model = llama_like if plan.pop("model", None) == "dense" else _small_moe()
    with pytest.raises(SpecError, match=rule) as refused:
        Plan(global_batch=8, seq_len=4096, **plan).validate_for(model)  # type: ignore[arg-type]
    assert refused.value.field == "offload_modules"
