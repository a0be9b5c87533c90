"""Megatron-Core's module checkpoints as selective-recompute modules: ``mla_up_proj``, ``mlp``,
``moe`` and ``shared_experts`` (megatron/core/transformer/transformer_config.py,
``recompute_modules``). Each frees the activations its module kept (expected bytes rebuilt here
from the model's dimensions) and re-runs the module's forward in backward."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cliutil import run_cli
from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.specs import Model, Plan
from clusterplan.training import flops as fl
from clusterplan.training import memory as mem
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import Hardware, StepEstimate, _layer_forward, estimate

SEQ = 4096


@pytest.fixture(scope="module")
def deepseek() -> Model:
    return load_model("deepseek-v3")


@pytest.fixture(scope="module")
def llama() -> Model:
    return load_model("llama3-8b")


def _batch(model: Model, **fields: Any) -> PlanBatch:
    return PlanBatch.from_plans([Plan(**fields).validate_for(model)], model)


def _run(model: Model, **fields: Any) -> StepEstimate:
    return estimate(model, hardware_for(load_system("dgx-h100")), _batch(model, **fields))


def _fields(model: Model, **extra: Any) -> dict[str, Any]:
    """A one-stage plan (TP1, one micro-batch of SEQ tokens per DP rank); MoE models EP8."""
    fields: dict[str, Any] = {"dp": 64, "global_batch": 64, "seq_len": SEQ, "recompute": "selective"}
    if model.moe is not None:
        fields["ep"] = 8
    return fields | extra


def _freed(model: Model, modules: tuple[str, ...], **extra: Any) -> float:
    """Activation bytes per layer (one micro-batch) that adding ``modules`` to core_attn frees."""
    base = mem.activation_bytes_per_layer(model, _batch(model, **_fields(model, **extra)))
    more = mem.activation_bytes_per_layer(
        model, _batch(model, **_fields(model, recompute_modules=("core_attn", *modules), **extra)))
    return float(base[0] - more[0])


# ---- expected bytes per token, from the models' dimensions ----------------------------------
def _deepseek_expected(gemm_input: float = 2.0) -> dict[str, float]:
    """DeepSeek-V3: 61 layers (3 dense of FFN 18432, 58 MoE of top-8 + 1 shared experts of 2048),
    h 7168, SwiGLU (two bf16 up-projection outputs, 4 B, plus the down-projection's input), MLA
    with 128 heads of nope 128 + rope 64 for Q/K and 128 for V."""
    h, heads = 7168, 128
    dense, moe = 3 / 61, 58 / 61
    return {
        "mla_up_proj": 2.0 * heads * 192 + 2.0 * heads * 192 + 2.0 * heads * 128,  # Q, K, V
        "mlp": dense * ((4.0 + gemm_input) * 18432 + gemm_input * h),  # intermediates + norm output
        "moe": moe * ((4.0 + gemm_input) * (8 + 1) * 2048 + gemm_input * h * 8),  # + dispatch buffer
        "shared_experts": moe * (4.0 + gemm_input) * 2048,
    }


@pytest.mark.parametrize("module", ["mla_up_proj", "mlp", "moe", "shared_experts"])
def test_each_module_frees_its_activations_on_deepseek_v3(deepseek: Model, module: str) -> None:
    expected = _deepseek_expected()[module] * SEQ
    assert _freed(deepseek, (module,)) == pytest.approx(expected, rel=1e-12)


def test_fp8_keeps_the_quantized_gemm_inputs_so_frees_fewer_bytes(deepseek: Model) -> None:
    expected = _deepseek_expected(gemm_input=1.0)
    for module in ("mlp", "moe", "shared_experts"):
        assert _freed(deepseek, (module,), precision="fp8") == pytest.approx(expected[module] * SEQ, rel=1e-12)


def test_mlp_frees_a_dense_models_ffn_and_its_fused_norm_output(llama: Model) -> None:
    """Llama 3 8B (h 4096, SwiGLU FFN 14336) on TP2 with SP: every layer's FFN intermediates
    (split by TP) and the FFN norm output (sequence-parallel, also split)."""
    per_token = ((4.0 + 2.0) * 14336 + 2.0 * 4096) / 2
    assert _freed(llama, ("mlp",), tp=2, dp=32) == pytest.approx(per_token * SEQ, rel=1e-12)


def test_modules_compose(deepseek: Model) -> None:
    """Disjoint modules add up; ``moe`` subsumes ``moe_act`` and ``shared_experts``."""
    expected = _deepseek_expected()
    together = _freed(deepseek, ("mla_up_proj", "mlp", "moe"))
    assert together == pytest.approx((expected["mla_up_proj"] + expected["mlp"] + expected["moe"]) * SEQ,
                                     rel=1e-12)
    assert _freed(deepseek, ("moe", "moe_act", "shared_experts")) == pytest.approx(_freed(deepseek, ("moe",)),
                                                                                    rel=1e-12)
    # Without moe, moe_act (the routed activation output, 2 B per routed element) and the shared
    # experts add up.
    moe_act = 58 / 61 * 2.0 * 8 * 2048
    assert _freed(deepseek, ("moe_act", "shared_experts")) == pytest.approx(
        (moe_act + expected["shared_experts"]) * SEQ, rel=1e-12)


@pytest.mark.parametrize(("model_name", "module"), [
    ("deepseek-v3", "mla_up_proj"), ("deepseek-v3", "mlp"), ("deepseek-v3", "moe"),
    ("deepseek-v3", "shared_experts"), ("llama3-8b", "mlp"),
])
def test_each_module_re_runs_its_forward(model_name: str, module: str) -> None:
    """Recompute time: the module's forward part, once per layer and micro-batch, more compute
    (a ``moe`` re-run also repeats the token permutations and EP all-to-alls); a slower step and more hardware FLOPs."""
    model = load_model(model_name)
    base_fields = _fields(model)
    with_module = _fields(model, recompute_modules=("core_attn", module))
    base, more = _run(model, **base_fields), _run(model, **with_module)
    batch = _batch(model, **with_module)
    hardware = hardware_for(load_system("dgx-h100"))
    parts = _layer_forward(model, Hardware(hardware.system, hardware.chip, hardware.efficiency), batch)
    part = {"mla_up_proj": "mla_up_proj", "mlp": "dense_ffn", "moe": "moe_ffn",
            "shared_experts": "shared_experts"}[module]
    rerun = float(parts[part][0])
    if module == "moe":  # a re-run MoE layer also permutes its tokens again
        rerun += float(parts["moe_permutation"][0])
    assert rerun > 0
    extra = float(more.time_breakdown["compute"][0] - base.time_breakdown["compute"][0])
    assert extra == pytest.approx(rerun * model.layers * float(batch.micro_batches[0]), rel=1e-9)
    assert float(more.step_time[0]) > float(base.step_time[0])
    if module == "moe":
        assert float(more.time_breakdown["ep_comm"][0]) > float(base.time_breakdown["ep_comm"][0])
    # Hardware FLOPs per second x step time: the work per step grows by the re-run matmuls.
    work = float(more.hfu[0] * more.step_time[0]) - float(base.hfu[0] * base.step_time[0])
    assert work > 0


def test_re_run_flops_come_from_the_module_dimensions(deepseek: Model, llama: Model) -> None:
    """The forward matmul FLOPs per token each module re-runs, from the dimensions."""
    h = 7168
    flops = fl.checkpointed_module_flops(deepseek)
    assert flops["mla_up_proj"] == 2.0 * 128 * (1536 * 192 + 512 * (128 + 128))
    assert flops["mlp"] == pytest.approx(2.0 * 3 * h * 18432 * 3 / 61)
    shared = 2.0 * 3 * h * 2048 * 58 / 61
    assert flops["shared_experts"] == pytest.approx(shared)
    assert flops["moe"] == pytest.approx((2.0 * 3 * h * 8 * 2048 + 2.0 * h * 256) * 58 / 61 + shared)
    assert fl.checkpointed_module_flops(llama)["mlp"] == 2.0 * 3 * 4096 * 14336
    seq = 8192
    rerun = fl.checkpointed_module_flops(llama)["mlp"]
    with_mlp = fl.hardware_flops_per_token(llama, seq, 1, 0, True, 0, rerun)
    without = fl.hardware_flops_per_token(llama, seq, 1, 0, True, 0)
    assert float(with_mlp - without) == pytest.approx(32 * rerun)
    # Full recompute already re-runs everything: the modules add nothing there.
    assert float(fl.hardware_flops_per_token(llama, seq, 2, 0, None, 0, rerun)) == float(
        fl.hardware_flops_per_token(llama, seq, 2))


def test_default_modules_unchanged_by_the_new_bits(deepseek: Model) -> None:
    """A plan without the new modules has no re-run parts added (bit-identical estimate)."""
    fields = _fields(deepseek)
    one, two = _run(deepseek, **fields), _run(deepseek, **fields, recompute_modules=("core_attn",))
    assert float(one.step_time[0]) == float(two.step_time[0])
    assert float(one.memory[0]) == float(two.memory[0])


# ---- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("model_name", "modules", "needles"), [
    ("llama3-8b", ("mla_up_proj",), ("mla_up_proj", "multi-latent attention")),
    ("llama3-8b", ("moe",), ("moe", "no experts")),
    ("llama3-8b", ("shared_experts",), ("shared_experts", "no experts")),
    ("qwen3-30b-a3b", ("shared_experts",), ("shared_experts", "no shared experts")),
    ("qwen3-30b-a3b", ("mlp",), ("mlp", "no dense MLP layers")),
    ("llama3-8b", ("core_attn", "elementwise", "mlp"), ("elementwise", "mlp")),
])
def test_modules_a_model_has_nothing_for_are_refused(model_name: str, modules: tuple[str, ...],
                                                     needles: tuple[str, ...]) -> None:
    """Megatron-Core refuses mla_up_proj without MLA (transformer_config.py); the others would
    change nothing, which a plan refuses as for moe_act on a dense model."""
    model = load_model(model_name)
    with pytest.raises(SpecError) as refused:
        _batch(model, **_fields(model, recompute_modules=modules))
    assert refused.value.field == "recompute_modules"
    for needle in needles:
        assert needle in str(refused.value)


def test_moe_recompute_with_the_ep_overlap_is_refused(deepseek: Model) -> None:
    """Megatron-Core asserts 'moe' is not recomputed with overlap_moe_expert_parallel_comm."""
    with pytest.raises(SpecError, match="overlap_ep"):
        _batch(deepseek, **_fields(deepseek, recompute_modules=("moe",), overlap_ep=True))


# ---- CLI ----------------------------------------------------------------------------------------
DEEPSEEK_TRAIN = ["train", "--model", "deepseek-v3", "--system", "dgx-h800", "--chips", "2048", "--seq", "4096",
                  "--global-batch", "15360", "--pp", "16", "--ep", "64", "--precision", "fp8", "--mtp", "1",
                  "--recompute", "selective", "--json"]


def test_cli_train_takes_the_new_modules(capsys: pytest.CaptureFixture[str]) -> None:
    """DeepSeek-V3 fp8 on 2048 H800s: with the default module its activations do not fit (exit
    1, the record still printed); recomputing the MLA up-projections and the MoE layers fits, at
    the cost of a slower step."""
    code, out, err = run_cli(capsys, [*DEEPSEEK_TRAIN, "--recompute-modules", "mla_up_proj,moe"])
    assert code == 0, err
    record = json.loads(out)
    assert record["plan"]["recompute_modules"] == ["mla_up_proj", "moe"]
    assert record["fits_memory"]
    code, out, _ = run_cli(capsys, [*DEEPSEEK_TRAIN, "--recompute-modules", "core_attn"])
    default = json.loads(out)
    assert code == 1 and not default["fits_memory"]
    assert record["memory_bytes_per_chip"] < default["memory_bytes_per_chip"]
    assert record["step_time_s"] > default["step_time_s"]


@pytest.mark.parametrize(("model_name", "modules", "needles"), [
    ("deepseek-v3", "mla_up_proj,bogus",
     ("--recompute-modules", "bogus", "mla_up_proj", "mlp", "moe", "shared_experts", "core_attn")),
    ("llama3-8b", "mla_up_proj", ("--recompute-modules", "mla_up_proj", "multi-latent attention")),
])
def test_cli_refuses_a_bad_module_in_one_line(capsys: pytest.CaptureFixture[str], model_name: str, modules: str,
                                             needles: tuple[str, ...]) -> None:
    code, out, err = run_cli(capsys, ["train", "--model", model_name, "--system", "dgx-h100", "--chips", "64",
                                      "--seq", "4096", "--global-batch", "64", "--recompute", "selective",
                                      "--recompute-modules", modules])
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    for needle in needles:
        assert needle in err
