"""The fused-attention library as a plan setting (costs/attention.py): measured rates from
catalog/kernels.yaml, applied to the attention core only, stated in answers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from tests.cliutil import run_cli
from tests.test_cli import assert_refused

from clusterplan.catalog import load_chip, load_kernels, load_model, load_system
from clusterplan.catalog.loader import attention_head_dim_ratios, attention_kernel_rates, chip_names, hardware_for
from clusterplan.costs.attention import (
    IMPLEMENTATIONS,
    RATE_MIN_SEQ,
    kernel_rates,
    measured_head_dim_ratio,
    reference_fraction,
    reference_kernel,
)
from clusterplan.specs import Plan
from clusterplan.specs.kernels import AttentionEntry, KernelCatalog
from clusterplan.specs.plan import ATTENTION_KERNEL_CODES
from clusterplan.training import flops as fl
from clusterplan.training.batch import PlanBatch
from clusterplan.training.sensitivity import assumed_settings
from clusterplan.training.step import _layer_forward, estimate
from clusterplan.validation.calibrate import kernel_anchors


def _plateau(implementation: str, direction: str, causal: bool, chip: str = "h100-sxm", head_dim: int = 128) -> float:
    """Mean TFLOP/s of the chip's curve at 4k tokens and more, by hand."""
    (entry,) = [e for e in load_kernels().entries
                if isinstance(e, AttentionEntry) and e.chip == chip and e.implementation == implementation
                and e.direction == direction and e.causal == causal and e.head_dim == head_dim]
    return float(np.mean([p.tflops for p in entry.points if p.seq_len >= RATE_MIN_SEQ]))


def test_hopper_rates_are_the_papers_causal_forward_ratios() -> None:
    """FlashAttention-2 and -3 against cuDNN from the FlashAttention-3 paper's causal forward
    bars; FlashAttention-1 through FlashAttention-2 in the FlashAttention-2 paper's H100
    forward+backward bars (the only figure that has both)."""
    rates = attention_kernel_rates("hopper")
    cudnn = _plateau("cuDNN", "fwd", True)
    assert rates["cudnn"] == 1.0
    assert rates["flash2"] == pytest.approx(_plateau("FlashAttention-2", "fwd", True) / cudnn, abs=2e-3)
    assert rates["flash3"] == pytest.approx(_plateau("FlashAttention-3", "fwd", True) / cudnn, abs=2e-3)
    fa1_over_fa2 = _plateau("FlashAttention-1", "fwd_bwd", True) / _plateau("FlashAttention-2", "fwd_bwd", True)
    assert rates["flash1"] == pytest.approx(rates["flash2"] * fa1_over_fa2, abs=2e-3)
    assert rates["flash1"] < rates["flash2"] < rates["cudnn"] < rates["flash3"]
    # The backward bars agree with the forward ratio within 5 % (the docstring's claim).
    backward = _plateau("FlashAttention-2", "bwd", False) / _plateau("cuDNN", "bwd", False)
    assert backward == pytest.approx(rates["flash2"], rel=0.05)


def test_a_family_without_measurements_has_no_rates() -> None:
    assert attention_kernel_rates("trainium2") == {}
    assert attention_kernel_rates("cdna3") == {}


def test_a_kernel_with_no_chain_to_the_reference_is_left_out() -> None:
    """Without the cuDNN curves, nothing is rated; without a FlashAttention-2 curve beside
    FlashAttention-1's, FlashAttention-1 is not rated."""
    entries = load_kernels().entries
    no_cudnn = KernelCatalog(entries=tuple(e for e in entries if getattr(e, "implementation", "") != "cuDNN"))
    assert kernel_rates(no_cudnn, ["h100-sxm"]) == {}
    no_fa2_pair = KernelCatalog(entries=tuple(
        e for e in entries if not (getattr(e, "implementation", "") == "FlashAttention-2"
                                   and getattr(e, "direction", "") == "fwd_bwd")))
    rates = kernel_rates(no_fa2_pair, ["h100-sxm"])
    assert "flash1" not in rates and set(rates) == set(IMPLEMENTATIONS) - {"flash1"}


def _attention(system: str, kernel: str, **plan: Any) -> tuple[float, float]:
    """(attention core forward time, step time) of a Llama-3-8B plan with this kernel."""
    model = load_model("llama3-8b")
    hardware = hardware_for(load_system(system))
    fields = {"tp": 1, "dp": 8, "global_batch": 64, "seq_len": 8192, **plan}
    batch = PlanBatch.from_plans([Plan(**fields, attention_kernel=kernel).validate_for(model)], model)
    return float(_layer_forward(model, hardware, batch)["attention"][0]), float(
        estimate(model, hardware, batch).step_time[0])


def test_the_kernel_scales_only_the_attention_core_by_its_measured_rate() -> None:
    """Attention time less its fixed kernel cost goes as 1/rate: the flash2 - cudnn and flash3 -
    cudnn differences stand in the ratio (1/r2 - 1)/(1/r3 - 1); auto is cudnn."""
    rates = attention_kernel_rates("hopper")
    times = {kernel: _attention("dgx-h100", kernel) for kernel in ("auto", "flash1", "flash2", "cudnn", "flash3")}
    assert times["auto"] == times["cudnn"]
    core = {kernel: value[0] for kernel, value in times.items()}
    expected = (1 / rates["flash2"] - 1) / (1 / rates["flash3"] - 1)
    assert (core["flash2"] - core["cudnn"]) / (core["flash3"] - core["cudnn"]) == pytest.approx(expected, rel=1e-9)
    steps = [times[k][1] for k in ("flash1", "flash2", "cudnn", "flash3")]
    assert steps == sorted(steps, reverse=True) and len(set(steps)) == 4  # slower library, slower step


def test_unfused_attention_ignores_the_kernel() -> None:
    assert _attention("dgx-h100", "flash2", flash_attention=False) == _attention(
        "dgx-h100", "cudnn", flash_attention=False)


def test_a_family_without_measurements_runs_every_kernel_at_its_fitted_rate() -> None:
    assert _attention("trn2-ultraserver", "flash2") == _attention("trn2-ultraserver", "auto")


def test_search_shares_the_kernel_across_plans(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64", "--seq", "8192",
            "--global-batch", "512", "--top", "1", "--json"]
    code, out, _ = run_cli(capsys, args)
    assert code == 0
    code2, slower, _ = run_cli(capsys, [*args, "--attention-kernel", "flash2"])
    assert code2 == 0

    def best(text: str) -> float:
        return float(json.loads(text)["best"][0]["step_time_s"])

    assert best(slower) > best(out)


def test_train_states_the_kernel_and_its_rate(capsys: pytest.CaptureFixture[str]) -> None:
    plan = ["--model", "llama3-8b", "--chips", "8", "--global-batch", "64", "--seq", "8192"]
    code, out, _ = run_cli(capsys, ["train", *plan, "--system", "dgx-h100", "--attention-kernel", "flash2", "--json"])
    assert code == 0
    record = json.loads(out)
    assert record["attention_kernel"] == "flash2"
    assert record["attention_kernel_rate"] == attention_kernel_rates("hopper")["flash2"]
    assert not any("attention_kernel" in line for line in record.get("extrapolation", []))
    code, out, _ = run_cli(capsys, ["train", *plan, "--system", "dgx-h100", "--attention-kernel", "flash2"])
    assert code == 0 and "attention kernel (flash2)" in out and "the rate of cuDNN's" in out
    code, out, _ = run_cli(capsys, ["train", *plan, "--system", "dgx-h100", "--json"])
    assert json.loads(out)["attention_kernel"] == "auto" and json.loads(out)["attention_kernel_rate"] == 1.0
    code, out, _ = run_cli(capsys, ["train", *plan, "--system", "dgx-h100", "--no-flash-attention", "--json"])
    assert json.loads(out)["attention_kernel"] == "unfused"


def test_a_named_kernel_without_measurements_is_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    plan = ["--model", "llama3-8b", "--chips", "64", "--global-batch", "64", "--seq", "8192"]
    code, out, _ = run_cli(capsys, ["train", *plan, "--system", "trn2-ultraserver", "--attention-kernel", "flash2",
                                    "--json"])
    assert code == 0
    flags = json.loads(out)["extrapolation"]
    assert any(line.startswith("attention_kernel=flash2: catalog/kernels.yaml has no trainium2") for line in flags)


@pytest.mark.parametrize("value", ["fa2", "FLASH2", "", "cudnn9"])
def test_a_bad_kernel_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, out, err = run_cli(capsys, ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "8",
                                      "--global-batch", "64", "--seq", "8192", "--attention-kernel", value])
    assert_refused(code, out, err, "--attention-kernel", "flash2")


def test_sensitivity_reports_the_kernel_where_it_matters() -> None:
    """An open kernel is reported on Hopper (FlashAttention-2 against the reference), not on a
    family where every library runs at the same rate."""
    model = load_model("llama3-8b")
    plan = Plan(tp=1, dp=8, global_batch=64, seq_len=8192).validate_for(model)

    def settings(system: str) -> dict[str, Any]:
        hardware = hardware_for(load_system(system))
        step = float(estimate(model, hardware, PlanBatch.from_plans([plan], model)).step_time[0])
        return {item["field"]: item for item in assumed_settings(model, hardware, plan, set(), step)}

    hopper = settings("dgx-h100")
    assert hopper["attention_kernel"]["value"] == "auto"
    assert hopper["attention_kernel"]["alternative"] == "flash2"
    assert hopper["attention_kernel"]["step_time_s_if_changed"] > 0
    assert "attention_kernel" not in settings("trn2-ultraserver")


def test_published_rows_name_their_library() -> None:
    """The tagging of docs/attention-kernels.md: NeMo 24.07 FlashAttention-2 (GPT-3 175B cuDNN),
    later NeMo cuDNN; MLPerf v3.0 FlashAttention-1, v3.1 FlashAttention-2, v4.x cuDNN."""
    from clusterplan.validation.cases import nemo_perf
    from clusterplan.validation.cases_mlperf import mlperf_training

    kernels: dict[str, str] = {}
    for case in [*nemo_perf(), *mlperf_training()]:
        if case.plan is not None:
            kernels[case.label] = case.plan.attention_kernel
    nemo_2407 = {label: k for label, k in kernels.items() if "NeMo 24.07" in label}
    assert nemo_2407 and all(k == ("cudnn" if "gpt3-175b" in label.lower() else "flash2")
                             for label, k in nemo_2407.items())
    assert {k for label, k in nemo_2407.items() if "GPT3-5B" in label or "GPT3-20B" in label} == {"flash2"}
    assert all(k == "cudnn" for label, k in kernels.items() if "NeMo 2" in label and "NeMo 24.07" not in label)
    assert {k for label, k in kernels.items() if label.startswith("v3.0") and "NVIDIA" in label} == {"flash1"}
    assert {k for label, k in kernels.items() if label.startswith("v3.1") and "NVIDIA" in label} == {"flash2"}
    assert {k for label, k in kernels.items() if label.startswith("v4.") and "H100" in label} == {"cudnn"}
    assert set(ATTENTION_KERNEL_CODES) >= set(kernels.values())


def test_llm_foundry_rows_name_flash_attention_2_only_where_it_was_installed() -> None:
    """The 2024-01 large-scale H100 table's sweep ran flash-attn 2.4.2 for 1b/3b/7b/70b and the
    Triton kernel for 13b/30b; the 2023-10 H100 tables ran the Triton kernel (flash-attn 1.0.9
    installed), FA1-class (docs/attention-kernels.md section 6), as the 2023-10 A100 tables did."""
    from clusterplan.validation.cases_llmfoundry import llmfoundry_mpt

    tagged = {(c.label, c.plan.attention_kernel) for c in llmfoundry_mpt() if c.plan is not None}
    flash2 = {label for label, kernel in tagged if kernel == "flash2"}
    assert flash2 and all(" x h100_80gb" in label and int(label.split(", ")[1].split(" x ")[0]) >= 128
                          and not label.startswith(("MPT 13b", "MPT 30b")) for label in flash2)
    assert {kernel for label, kernel in tagged if "a100" in label} == {"flash1"}
    assert {kernel for label, kernel in tagged if "h100" in label and label not in flash2} == {"flash1"}


def test_serving_prefill_takes_the_library_and_decode_does_not() -> None:
    """The prompt's pair time goes as 1/rate; a decoding sequence's stays at the reference."""
    from clusterplan.inference.step import Deployment, ReplicaModel

    model = load_model("llama3-70b")
    hardware = hardware_for(load_system("dgx-h100"))
    rates = attention_kernel_rates("hopper")

    def replica(kernel: str) -> ReplicaModel:
        return ReplicaModel(model, hardware, Deployment(tp=8, attention_kernel=kernel))

    reference, fast = replica("auto"), replica("flash3")
    assert fast.attention_kernel_rate == rates["flash3"]
    assert reference.seconds_per_pair / fast.seconds_per_pair == pytest.approx(rates["flash3"], rel=1e-12)
    assert fast.seconds_per_decode_pair == reference.seconds_per_decode_pair == reference.seconds_per_pair


def test_the_trtllm_stack_rates_its_context_attention_where_libraries_were_measured(
        capsys: pytest.CaptureFixture[str]) -> None:
    from clusterplan.inference.stacks import TRTLLM_ATTENTION

    base = ["serve", "--model", "llama3-70b", "--tp", "8", "--stack", "trtllm", "--json"]
    code, out, _ = run_cli(capsys, [*base, "--system", "dgx-h100"])
    assert code == 0
    record = json.loads(out)
    assert record["deployment"]["attention_kernel"] == TRTLLM_ATTENTION == "flash3"
    assert record["attention_kernel_rate"] == attention_kernel_rates("hopper")["flash3"]
    code, out, _ = run_cli(capsys, [*base, "--system", "dgx-b200"])
    record = json.loads(out)
    assert record["deployment"]["attention_kernel"] == "auto" and record["attention_kernel_rate"] == 1.0
    assert not any("attention_kernel" in line for line in record["extrapolation"])
    # A library the user names wins over the stack's.
    code, out, _ = run_cli(capsys, [*base, "--system", "dgx-h100", "--attention-kernel", "flash2"])
    assert json.loads(out)["deployment"]["attention_kernel"] == "flash2"


def test_serve_refuses_a_bad_library_and_flags_an_unmeasured_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, ["serve", "--model", "llama3-8b", "--system", "dgx-h100",
                                      "--attention-kernel", "fa3"])
    assert_refused(code, out, err, "--attention-kernel", "flash3")
    code, out, _ = run_cli(capsys, ["serve", "--model", "llama3-8b", "--system", "trn2-ultraserver", "--tp", "4",
                                    "--attention-kernel", "flash2", "--json"])
    assert code == 0
    assert any(line.startswith("attention_kernel=flash2") for line in json.loads(out)["extrapolation"])


@pytest.mark.parametrize("stack", ["vllm", "sglang"])
def test_vllm_and_sglang_default_to_flashattention3_on_hopper(stack: str) -> None:
    from clusterplan.inference.stacks import stack_defaults

    hopper = stack_defaults(stack, hardware_for(load_system("dgx-h100")), tp=8, pp=1, attention_dp=1)
    assert hopper.values["attention_kernel"] == "flash3"
    blackwell = stack_defaults(stack, hardware_for(load_system("dgx-b200")), tp=8, pp=1, attention_dp=1)
    assert "attention_kernel" not in blackwell.values


def test_the_reference_kernel_is_anchored_at_its_forward_times_the_measured_fwd_bwd_ratio() -> None:
    """Hopper's cuDNN is measured forward only; the fwd+bwd curves of FlashAttention-1 and -2
    over their rates both give cuDNN's causal forward fraction times FlashAttention-2's
    fwd+bwd-over-forward ratio (0.50 of the BF16 peak). That is what calibration anchors the
    fitted ``attention`` to; a family without attention curves is not anchored."""
    chips = [name for name in chip_names() if load_chip(name).family == "hopper"]
    measured = reference_fraction(load_kernels(), chips)
    by_hand = (_plateau("cuDNN", "fwd", True) * _plateau("FlashAttention-2", "fwd_bwd", True)
               / _plateau("FlashAttention-2", "fwd", True)) / 989.4
    assert measured == pytest.approx(by_hand, abs=2e-3)
    assert 0.45 < by_hand < 0.55
    anchors = kernel_anchors()
    assert anchors["hopper"]["attention"] == measured
    assert all("attention" not in anchors.get(family, {}) for family in ("cdna3", "trainium2"))
    assert reference_fraction(load_kernels(), ["mi300x"]) is None


def test_the_reference_fraction_prefers_the_references_own_curves() -> None:
    """The reference's own fwd+bwd curve wins over its forward/backward pair, which wins over
    the other libraries' fwd+bwd curves through their rates; without any, None."""
    entries = load_kernels().entries
    (forward,) = [e for e in entries if isinstance(e, AttentionEntry) and e.chip == "b200"
                  and e.implementation == "cuDNN" and e.direction == "fwd"]
    own = forward.model_copy(update={"direction": "fwd_bwd", "points": tuple(
        point.model_copy(update={"fraction_of_peak": 0.4}) for point in forward.points)})
    assert reference_fraction(KernelCatalog(entries=(*entries, own)), ["b200"]) == 0.4
    pair_only = reference_fraction(load_kernels(), ["b200"])
    assert pair_only is not None and pair_only != 0.4
    no_cudnn = KernelCatalog(entries=tuple(e for e in entries if getattr(e, "implementation", "") != "cuDNN"))
    assert reference_fraction(no_cudnn, ["b200", "h100-sxm"]) is None


def _b200(implementation: str, direction: str) -> float:
    """A causal B200 plateau as a fraction of the 2.25 PFLOP/s bf16 peak."""
    return _plateau(implementation, direction, True, chip="b200") / 2250.0


def test_blackwell_measures_cudnn_and_flashattention2_from_the_flashattention4_paper() -> None:
    """B200 (arXiv:2603.05451): FlashAttention-2 at its causal forward ratio to cuDNN 9.13, and
    the reference anchored at cuDNN's causal forward and backward combined by their FLOPs (the
    backward 2.5x the forward's): 0.53 and 0.46 of the peak, 0.48 together. FlashAttention-1 and
    -3 do not run on Blackwell: not rated, and naming them is flagged."""
    rates = attention_kernel_rates("blackwell")
    assert set(rates) == {"cudnn", "flash2"}
    assert rates["flash2"] == pytest.approx(_b200("FlashAttention-2", "fwd") / _b200("cuDNN", "fwd"), abs=2e-3)
    forward, backward = _b200("cuDNN", "fwd"), _b200("cuDNN", "bwd")
    by_hand = 3.5 / (1.0 / forward + 2.5 / backward)
    assert kernel_anchors()["blackwell"]["attention"] == pytest.approx(by_hand, abs=2e-4)
    assert 0.45 < by_hand < 0.50 < forward
    hardware = hardware_for(load_system("dgx-b200"))
    assert hardware.attention_kernel_measured("flash2") and not hardware.attention_kernel_measured("flash3")
    assert hardware.attention_rate("flash3") == 1.0
    from clusterplan.validation.bands import attention_kernel_flags

    assert attention_kernel_flags("flash2", hardware) == ()
    (flag,) = attention_kernel_flags("flash3", hardware)
    assert flag.startswith("attention_kernel=flash3: catalog/kernels.yaml has no blackwell measurement")


def test_ampere_takes_flashattention2_as_its_reference_from_the_flashattention2_paper() -> None:
    """On A100 Transformer Engine prefers FlashAttention (FusedAttention only from sm90) and
    PyTorch SDPA's flash backend is FlashAttention-2, so ``auto`` is FlashAttention-2 there and
    the fitted attention is anchored at its own causal fwd+bwd bars (Dao 2023, A100 figure:
    173/182/189 TFLOP/s at 4k-16k, 0.58 of 312); FlashAttention-1 is its ratio of those bars
    (76/80/83, 0.44), cuDNN unmeasured there and flagged when named."""
    assert reference_kernel("ampere") == "flash2"
    assert {reference_kernel(f) for f in ("hopper", "blackwell", "cdna3", "trainium2")} == {"cudnn"}
    fa2 = _plateau("FlashAttention-2", "fwd_bwd", True, chip="a100-80gb")
    fa1 = _plateau("FlashAttention-1", "fwd_bwd", True, chip="a100-80gb")
    assert fa2 == pytest.approx((173 + 182 + 189) / 3)
    rates = attention_kernel_rates("ampere")
    assert rates == {"flash2": 1.0, "flash1": pytest.approx(fa1 / fa2, abs=2e-4)}
    assert 0.40 < rates["flash1"] < 0.48
    assert kernel_anchors()["ampere"]["attention"] == pytest.approx(fa2 / 312.0, abs=2e-4)
    # The Triton kernel llm-foundry copied runs at FlashAttention-1's pace (why its rows are flash1).
    triton = _plateau("FlashAttention Triton", "fwd_bwd", True, chip="a100-80gb")
    assert triton / fa1 == pytest.approx(0.97, abs=0.01)
    hardware = hardware_for(load_system("dgx-a100"))
    assert hardware.attention_reference == "flash2"
    assert hardware.attention_rate("auto") == hardware.attention_rate("flash2") == 1.0
    assert hardware.attention_rate("cudnn") == 1.0 and not hardware.attention_kernel_measured("cudnn")
    from clusterplan.validation.bands import attention_kernel_flags

    (flag,) = attention_kernel_flags("cudnn", hardware)
    assert flag.startswith("attention_kernel=cudnn: catalog/kernels.yaml has no ampere measurement")


def test_ampere_states_its_reference_and_offers_flashattention1(capsys: pytest.CaptureFixture[str]) -> None:
    """The table names the reference a rate is relative to; the sensitivity on Ampere compares the
    reference with FlashAttention-1 (FlashAttention-2 is the reference there)."""
    plan = ["--model", "llama3-8b", "--chips", "8", "--global-batch", "64", "--seq", "8192", "--system", "dgx-a100"]
    code, out, _ = run_cli(capsys, ["train", *plan, "--attention-kernel", "flash1"])
    assert code == 0 and "attention kernel (flash1)" in out and "the rate of FlashAttention-2's" in out
    code, out, _ = run_cli(capsys, ["train", *plan, "--json"])
    record = json.loads(out)
    assert record["attention_reference_kernel"] == "flash2"
    (kernel,) = [item for item in record["assumed"] if item["field"] == "attention_kernel"]
    assert kernel["alternative"] == "flash1" and kernel["step_time_s_if_changed"] > record["step_time_s"]


def test_head_dimension_ratios_are_each_librarys_measured_ones() -> None:
    """A100 (Dao 2023's A100 figure, causal fwd+bwd, 4k-16k tokens): FlashAttention-2 at head
    dimension 64 runs at 0.90 of its 128 rate and FlashAttention-1 at 1.16; H100 FlashAttention-3
    (causal forward, Shah et al. 2024) at 0.75 (64) and 1.05 (256). ``auto`` takes the
    reference's; a library measured at 128 only has none."""
    ampere = attention_head_dim_ratios("ampere")
    def narrow_over_128(implementation: str) -> float:
        return (_plateau(implementation, "fwd_bwd", True, "a100-80gb", head_dim=64)
                / _plateau(implementation, "fwd_bwd", True, "a100-80gb"))

    fa2, fa1 = narrow_over_128("FlashAttention-2"), narrow_over_128("FlashAttention-1")
    assert ampere["flash2"] == {64: pytest.approx(fa2, abs=1e-4), 128: 1.0} == ampere["auto"]
    assert ampere["flash1"][64] == pytest.approx(fa1, abs=1e-4)
    assert 0.85 < fa2 < 0.95 < 1.1 < fa1 < 1.2
    hopper = attention_head_dim_ratios("hopper")
    assert set(hopper) == {"flash3"}  # cuDNN, the reference, is measured at 128 only
    assert hopper["flash3"][64] == pytest.approx(0.753, abs=2e-3)
    assert hopper["flash3"][256] == pytest.approx(1.047, abs=2e-3)
    assert attention_head_dim_ratios("blackwell") == {}


def test_a_measured_ratio_is_interpolated_inside_its_range_only() -> None:
    ratios = {64: 0.75, 128: 1.0, 256: 1.05}
    assert measured_head_dim_ratio(ratios, 128, 128) == 1.0
    assert measured_head_dim_ratio(ratios, 64, 64) == 0.75
    # MLA's un-absorbed prompt (QK 192, V 128): the FLOP-weighted 160, a third of the way to 256 in log2
    expected = 1.0 + 0.05 * (np.log2(160) - 7.0)
    assert measured_head_dim_ratio(ratios, 192, 128) == pytest.approx(expected)
    assert measured_head_dim_ratio(ratios, 576, 512) is None
    assert measured_head_dim_ratio({64: 0.9, 128: 1.0}, 256, 256) is None
    assert measured_head_dim_ratio({}, 64, 64) is None


def test_the_step_takes_the_librarys_head_dimension_rate_where_measured() -> None:
    """On A100 a head-dim-64 model's flash1 attention core is the reference's times the two
    libraries' rate and head-dimension ratios; an unmeasured library (cuDNN) runs as the
    reference; on Hopper cuDNN keeps the GEMM-like loss and FlashAttention-3 its own ratio."""
    a100 = hardware_for(load_system("dgx-a100"))
    rates = a100.attention_dim_rates(64, 64)
    code = ATTENTION_KERNEL_CODES
    assert rates[code["auto"]] == rates[code["flash2"]] == rates[code["cudnn"]] == pytest.approx(0.9044, abs=1e-4)
    assert rates[code["flash1"]] == pytest.approx(1.1548, abs=1e-4)
    h100 = hardware_for(load_system("dgx-h100"))
    from clusterplan.costs.compute import attention_head_dim_factor

    gemm_like = float(attention_head_dim_factor(64, 64, h100.efficiency.matmul_dim_half))
    hopper = h100.attention_dim_rates(64, 64)
    assert hopper[code["cudnn"]] == hopper[code["flash2"]] == pytest.approx(gemm_like)
    assert hopper[code["flash3"]] == pytest.approx(0.7529, abs=1e-4)
    assert all(h100.attention_dim_rates(128, 128) == 1.0)
    model = load_model("gpt-oss-20b")  # 64 heads of 64
    assert fl.attention_head_dims(model) == (64, 64)

    def core(kernel: str) -> float:
        plan = Plan(tp=1, dp=8, global_batch=64, seq_len=8192, attention_kernel=kernel).validate_for(model)
        return float(_layer_forward(model, a100, PlanBatch.from_plans([plan], model))["attention"][0])

    overhead = a100.efficiency.kernel_overhead_s
    ratio = (core("flash1") - overhead) / (core("auto") - overhead)
    expected = (1.0 * rates[code["flash2"]]) / (attention_kernel_rates("ampere")["flash1"] * rates[code["flash1"]])
    assert ratio == pytest.approx(expected, rel=1e-9)


def test_a_borrower_takes_the_attention_fraction_of_donors_with_its_reference_library() -> None:
    """A family without an attention curve borrows the measured donors' mean fraction of peak,
    but a fraction of FlashAttention-2 (Ampere's reference) is not one of cuDNN: with Ampere and
    Hopper as donors, MI300X (reference cuDNN) takes Hopper's; with Ampere alone, Ampere's."""
    from clusterplan.validation.calibrate import DenseFit

    anchors = kernel_anchors()
    names = ("attention",)

    def borrowed(donors: tuple[str, ...]) -> float:
        return DenseFit(names, (1.0,), frozenset(names), anchors, (), donors).measured("cdna3", "attention")

    assert borrowed(("ampere", "hopper")) == anchors["hopper"]["attention"]
    assert borrowed(("ampere", "blackwell", "hopper")) == pytest.approx(
        (anchors["hopper"]["attention"] + anchors["blackwell"]["attention"]) / 2)
    assert borrowed(("ampere",)) == anchors["ampere"]["attention"]
    assert DenseFit(names, (1.0,), frozenset(names), anchors, (), ("hopper",)).measured(
        "ampere", "attention") == anchors["ampere"]["attention"]  # its own measurement first
