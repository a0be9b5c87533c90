"""Cross-validated calibration (issue #13): folds, the stage rule, the stored summary."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from clusterplan.catalog.loader import load_crossval
from clusterplan.cli import app
from clusterplan.validation.calibrate import DIFF_STEP, PRIORS, Calibration, _least_squares, fit_dense
from clusterplan.validation.cases import TABLES, all_cases, known_tables
from clusterplan.validation.crossval import Fold, cross_validate, folds, predict_held_out, summarise
from clusterplan.validation.harness import by_table, mape, run
from clusterplan.validation.registry import MEMORY_ONLY_TABLES

AMPERE_TABLES = ["korthikanti2022", "megatron_sc21"]

#: Out-of-sample MAPE (table left out) per table, as stored by the last `clusterplan calibrate`,
#: with a small margin: a change that makes the model generalise worse fails here even where
#: its in-sample error improves. Validation-only tables are out of sample by construction.
#: Issue #13's targets (8 % dense, 12 % MoE and serving) are not met everywhere yet:
#: docs/validation.md says which and why.
OUT_OF_SAMPLE_BOUNDS = {
    # Kernel-level measurements anchor the matmul and HBM efficiencies (catalog/kernels.yaml,
    # issue #13 round 4): alone, out of sample the mean over tables went 17.98 -> 17.56 %, with a
    # family left out 19.04 -> 18.11 %; these Ampere/Hopper tables moved up 0.4-0.9 points, maxtext_tpu
    # (13.5 -> 10.7 %) and torchtitan (20.9 -> 12.9 %) down (docs/kernels.md).
    # Round 8: the NeMo 24.07 GPT-3 175B row runs without TP overlap and Nemotron-4 340B with
    # selective recompute (their launcher configs): nemo_perf 18.4 -> 17.7 %.
    # Round 12: each row names its fused-attention library, each at its measured rate relative to
    # the fitted cuDNN one (FlashAttention-2 0.62, -1 0.27, -3 1.13; costs/attention.py). Hopper's
    # refit: bf16 GEMMs 0.73 -> 0.70, fp8 0.68 -> 0.70, attention (now cuDNN's) 0.28 -> 0.32:
    # nemo_perf 17.7 -> 15.1 %, but megatron_core_h100 7.0 -> 10.5 % (its BF16 rows, left out,
    # predicted -5 to -17 % by the mostly-FP8 rows of the other two tables).
    # Round 13: the reference library's fitted rate anchored to its measured causal fwd+bwd rate
    # (H100 cuDNN 0.50, B200 0.48 of peak; Hopper's refit 0.32 -> 0.43, kernel cost 14 -> 20 us,
    # fp8 GEMMs 0.70 -> 0.69): nemo_perf 15.1 -> 15.4 %, megatron_core_h100 10.5 -> 10.6 %.
    # Round 18: a kernel's fixed cost anchored at XLA's measured launch-bound GEMMs (Hopper 19.1 ->
    # 6.6 us a kernel; bf16 GEMMs 0.70 -> 0.67, attention 0.41 -> 0.38 in the refit):
    # megatron_core_h100 10.95 -> 12.26 % (its small-model rows slower: GPT 1.7B -17 -> -21 %),
    # nemo_perf 15.40 -> 15.38 %.
    "megatron_sc21": 6.0, "korthikanti2022": 4.5, "megatron_core_h100_2024": 12.5, "nemo_perf": 16.0,
    # GPT-OSS-120B's true attention (128-token window on alternating layers, sinks) makes its one
    # row faster still (+32.7 -> +41.3 %): the table's error is the small-expert MoE cost, not the
    # attention (docs/moe.md).
    # Round 8: mlperf_training 15.4 -> 14.2 % (Hopper's refit); maxtext_tpu 10.4 -> 11.0 % and
    # neuron_trn 50.3 -> 51.5 % with their families left to borrow it.
    # Round 9: the recipes' de-duplicating dispatch credited (nemo_perf_moe 12.3 -> 18.6 %: Qwen3-30B
    # on two H100 nodes +55 % out of sample) and a second MoE table, Megatron-MoE-ModelZoo (21.4 %).
    # Round 10: MoE token permutations and a per-local-expert grouped-GEMM cost: nemo_perf_moe
    # 18.6 -> 15.7 %, megatron_moe_modelzoo 21.4 -> 20.8 % (DeepSeek-V3 on GB200 joined).
    # Round 11: Blackwell chips' sustained clocks (GB200 0.83 of its datasheet against B200 and
    # GB300, fitted on nemo_perf's dense rows): the two GB200 Qwen3 rows of nemo_perf_moe go
    # -4/-8 -> -10/-15 % (15.7 -> 16.8 %), megatron_moe_modelzoo's GB200 rows +10/+21/+36 ->
    # -1/+10/+23 % (20.8 -> 19.6 %); maxtext_tpu 11.0 -> 12.0 % in the fold that lends the TPU
    # families the other stacks' fit (docs/validation.md).
    # Round 12 (attention libraries): megatron_moe_modelzoo 19.6 -> 18.3 % (its cuDNN long-context
    # rows), mlperf_training 14.1 -> 12.4 % (v3.0 FlashAttention-1, v3.1 -2, v4 cuDNN); nemo_perf_moe
    # 16.8 -> 18.2 % (Qwen3-30B on two H100 nodes +39 -> +50 %); maxtext_tpu 12.0 -> 13.5 % and
    # neuron_trn 51.0 -> 55.1 % in the folds that lend their families the other stacks' fit.
    # Round 13 (attention anchored): megatron_moe_modelzoo 18.3 -> 14.2 % (its cuDNN long-context
    # H100 rows -34/-29/-22/-12 -> -16/-14/-9/-3 %), mlperf_training 12.4 -> 12.7 %, nemo_perf_moe
    # 18.2 -> 18.5 %, maxtext_tpu 13.5 -> 13.0 %.
    # Round 18 (kernel cost anchored, Hopper attention 0.41 -> 0.38): megatron_moe_modelzoo
    # 14.83 -> 16.46 % (its 16k-128k-token H100 rows -4..-18 -> -8..-25 %), nemo_perf_moe
    # 18.51 -> 19.27 %.
    # Round 19 (attention at its kernel measurement, the span curve absolute; tightened):
    # megatron_moe_modelzoo 16.46 -> 11.10 % (the 16k-128k-token H100 rows -9..-25 -> about -5..+1 %);
    # nemo_perf_moe 19.27 -> 19.62 % (loosened).
    "nemo_perf_moe": 20.0, "megatron_moe_modelzoo": 11.5,
    # Round 14: a borrower's attention averages only donors with its reference library; without
    # that rule A100's FlashAttention-2 0.58 entered the TPU and Trainium1 folds' cuDNN-family mean
    # (neuron_trn 55.4 -> 57.2 %, maxtext_tpu 13.0 -> 13.4 %, measured and undone).
    # Round 18 (tightened): neuron_trn 55.8 -> 51.6 % (the Trainium1 fold borrows the GPU
    # families' measured kernel cost), mlperf_training 12.8 -> 12.1 %.
    # Round 19: maxtext_tpu 13.08 -> 12.31 % (tightened; the absolute span curve); neuron_trn
    # 51.6 -> 56.1 % (loosened: the Trainium1 fold takes the GPU families' measured attention at
    # realisation 1, where their fitted realisation had been about 0.75).
    # Round 21 (Megatron-Core's data-parallel buckets set the exposed edge; group-limited routing):
    # maxtext_tpu 12.31 -> 11.10 % (tightened; the TPU fold borrows a refit that moved a little),
    # neuron_trn 56.08 -> 57.06 % (loosened: the NxD ZeRO-1 rows at dp 4-64 now expose a 40-64M
    # parameter bucket, in sample 7.10 -> 7.34 %, and the fold borrows the GPU families' fit).
    "maxtext_tpu": 11.5, "neuron_trn": 57.5, "mlperf_training": 13.0,
    # Round 12: LLM Foundry's H100 rows name FlashAttention-2: 22.3 -> 17.6 % (never fitted).
    # Round 13: only the 2024-01 rows that ran flash-attn 2.4.2 do; the Triton-kernel rows take
    # FlashAttention-1's rate (FA1-class on A100) and the anchored refit: 17.6 -> 17.0 %, its
    # 32k-65k H100 rows +6..+17 -> -27..-34 % (the Triton kernel on H100 sits between FA1 and FA2).
    # Round 14: A100's library measured (FlashAttention-2 the Ampere reference, 0.58 of peak; the
    # 2023-10 A100 tables' Triton kernel at FlashAttention-1's 0.44 of it) and each library's measured
    # head-dimension ratio (FlashAttention-1 1.16 at head dim 64): 17.0 -> 10.6 %, its A100 rows
    # 19.0/18.5 -> 9.0/8.6 % (16k-65k-token rows, head dim 128: +9..+47 -> -21..-6 %; 64: +16..+30 -> -3..+9 %).
    # Round 19 (tightened): 11.06 -> 7.34 %, attention at the measured plateau and the span curve
    # absolute (its 8k-65k-token rows -14..-42 -> about -2..-21 %).
    "megatron_sc21_table2_zero3": 32.0, "mtnlg_2022": 25.0, "llmfoundry_mpt": 8.0, "bloom_176b": 34.0,
    # Round 5: ring attention's shorter key spans slow the two H100 CP rows of nemo_perf; the
    # refit raises Hopper's attention efficiency 0.27 -> 0.29 and the two torchtitan rows (8B,
    # 8k tokens, already too fast) go +12/+14 -> +15/+17 % (docs/validation.md).
    # Round 6: overlapped collectives hold SMs (TE's TP overlap 8, NCCL and the expert
    # all-to-all 20): the two torchtitan rows 15.6 -> 13.1 % (FSDP gathers behind compute slow it).
    # Round 12: torchtitan's PyTorch SDPA flash backend is FlashAttention-2: 12.0 -> 3.7 % (never
    # fitted: the mechanism's cleanest out-of-sample test).
    # Round 13: with the reference anchored (Hopper attention 0.32 -> 0.43), FlashAttention-2 runs
    # at 0.27 of peak (the FlashAttention-2 paper's H100 fwd+bwd: 0.31): both rows -4/-3 ->
    # +9/+11 % (too fast), 3.7 -> 9.8 %.
    # Round 15: reduce-scatter/all-gather at NCCL's ring latency (FSDP over 32-64 H200): 9.8 -> 8.0 %.
    # Round 18 (tightened): a kernel's fixed cost at XLA's measured 6.6 us instead of the fitted
    # 19 us: torchtitan (torch.compile, fused kernels) 8.0 -> 2.0 %, both rows +1/+3 %.
    # Round 19 (loosened): Hopper's attention at the measured 0.50 instead of the fitted 0.38 makes
    # both FlashAttention-2 rows (8k tokens, H200) too fast again: 2.0 -> 14.4 %, +14 % each.
    "palm_table3": 12.5, "torchtitan": 15.0,
    # AXLearn (JAX/XLA; new in round 8, validation only): 25.5 %, its two Trainium2 rows -32 and
    # -44 % (too fast: Trainium2 borrows Trainium1's fit), Qwen3-30B-A3B on B200 -51 %.
    "axlearn_2025": 26.5,
    # inference_latency gained the speculative Trainium2 row's TTFT (S0113, -21 %).
    # Round 7: the serving stage's fit takes a 3 % finite-difference step (it had stopped beside
    # its priors): inference_throughput 8.0 -> 6.0 %, inference_latency 15.2 -> 15.5 %,
    # inference_server 17.45 -> 17.43 % out of sample (docs/validation.md).
    # Round 12: TensorRT-LLM's context attention at FlashAttention-3's rate and Hopper's refit
    # (fp8 GEMMs 0.68 -> 0.70, kernel cost 22 -> 14 us, which serving shares; its fit's decode HBM
    # 0.90 -> 0.81): inference_throughput 6.6 -> 8.3 %, inference_latency 15.3 -> 15.1 %,
    # inference_server 17.5 -> 17.2 %.
    # Round 13: Hopper's refit with attention anchored (kernel cost 14 -> 20 us; its serving fit's
    # decode HBM 0.81 -> 0.87): inference_throughput 8.3 -> 7.0 %, inference_latency 15.1 ->
    # 15.3 %, inference_server 17.2 -> 16.2 %.
    # Round 15 (the ring latency, Hopper refit: serving step overhead 0.40 -> 0.38 ms):
    # inference_latency 15.3 -> 14.0 %, inference_server 16.2 -> 16.5 %.
    # Round 18 (Hopper's kernel cost anchored at 6.6 us; its serving refit: decode HBM 0.86 ->
    # 0.78, step overhead 0.38 -> 1.11 ms): inference_throughput 7.0 -> 10.0 % (the 8B TP1 rows
    # with 2k-20k-token prompts -10..-14 -> -18..-25 %), inference_latency 14.0 -> 13.8 %,
    # inference_server 16.5 -> 16.3 %.
    # Round 19 (Hopper's prefill attention 0.38 -> 0.50 of peak; serving refit): inference_throughput
    # 10.0 -> 9.0 % (tightened), inference_server 16.3 -> 16.7 %, inference_latency 13.8 -> 15.2 %
    # (loosened: Trainium2's serving rows, whose dense stage is Trainium1's refit).
    # Round 20 (the MoE router gate bf16 in every format; the serving refit): inference_throughput
    # 9.0 -> 8.5 % (tightened), inference_latency 15.2 -> 15.3 %, inference_server 16.7 -> 16.7 %.
    # Round 21 (no serving mechanism moved a fitted row; the dense refit did, a little):
    # inference_throughput 8.51 -> 10.21 % (loosened). Its left-out fold fits Hopper's serving
    # stage on the server and MLPerf rows alone, where decode HBM efficiency and the per-step cost
    # trade against each other: Hopper's dense HBM 0.738 -> 0.744 moved that fit from 0.694 /
    # 0.79 ms to 0.645 / 0.36 ms (its MAPE 11.5 -> 11.3 %), and the decode-bound rows 3 % slower.
    # inference_latency 15.28 -> 13.73 % (tightened: Trainium2's rows borrow Trainium1's refit).
    "inference_throughput": 10.5, "inference_latency": 14.0, "inference_server": 17.0,
    # MLPerf Inference llama2-70b (new in round 4; joins the serving fit): 40.5 % out of sample,
    # dominated by MI300X (+60 to +227 %: the cdna3 serving fit cannot reach it); the NVIDIA rows
    # are at -3 to +35 % (docs/validation.md). 26.0 % since round 5 (MI300X's fp8 GEMM transferred
    # relative to its measured bf16 one): MI300X +24 to +132 %. 27.7 % since round 6: the SM
    # sharing of overlapped collectives moves Hopper's fitted GEMM and attention efficiencies up,
    # which MI300X borrows for its dense stage (Interactive +132 -> +148 %; docs/validation.md).
    # 29.8 % since round 7: Hopper's serving fit, now converged on its 181 TensorRT-LLM rows
    # (HBM 0.82 -> 0.91 of peak), makes the four MLPerf H100/H200 rows 2 points faster still
    # (+15 to +32 %), and the Blackwell and MI300X folds that borrow it move with it.
    # 26.7 % since round 8: each row runs its config's step token budget (decodes counted),
    # scheduler and admission (MI300X: vLLM V0 without chunked prefill, Interactive +148 ->
    # +117 %; Server +42 -> +26 %).
    # 22.2 % since round 9 over 22 rows (the mixtral-8x7b rows joined; 26.7 % over the 12 before).
    # 20.7 % since round 10 over 25 rows (llama3.1-405b Offline joined; the MoE serving rows
    # expand and gather their routed rows through HBM).
    # 22.3 % since round 12: the MI300X rows, which borrow the NVIDIA families' dense fit (Hopper's
    # bf16/fp8 GEMM trade), +23..+118 -> +31..+161 %; the H100/H200 rows +2 to +4 points.
    # 21.5 % since round 13 (Hopper's refit with attention anchored). 19.5 % since round 18
    # (kernel cost anchored; tightened).
    # 16.4 % since round 19 (Hopper's prefill attention at its measurement; tightened).
    "mlperf_inference": 17.0,
    # Round 10, validation only: MLPerf deepseek-r1 with attention DP and wide EP, 2.5-4.7x too
    # fast (255 %: a regression bound, docs/serving.md); llama3.1-405b Server and Interactive
    # (p99 TTFT set by prompts up to 19,988 tokens), 16.9 %. Round 11 (sustained clocks): 265 %
    # and 20.6 % (the GB200 Server row -11 -> -22 %: its p99 TTFT follows the slower prefill).
    # Round 20: the table (renamed from mlperf_inference_wide_ep) gains NVIDIA's five published
    # TensorRT-LLM runs, and the step model the fp4 checkpoint's bf16 MLA projections, FlashMLA's
    # measured decode rate and the routing skew of real text: 150.2 % over 11 rows (MLPerf's six
    # +115..+292 %, the guide's B200/H200 runs +36..+81 %, the ADP-balance blog's +102/+169 %).
    # Still a regression bound, not an accuracy target (docs/serving.md).
    # Round 21: 150.2 -> 157.2 % (loosened): DeepSeek's group-limited routing (a token reaches at
    # most 4 of 8 expert groups) cuts the de-duplicated dispatch's bytes 25-31 %, so the runs that
    # were already too fast are faster still (docs/moe.md).
    "inference_wide_ep": 160.0, "mlperf_inference_long_prompts": 21.5,  # round 12: unchanged
    # Round 16, validation only: MLPerf Training v5.x Llama 3.1 405B/8B, a test set of NVIDIA's own
    # stack no fit has seen: 20.0 % (H100 405B +18..+21 %, one-node 8B +11..+21 %, 8B on 512 GPUs
    # +87/+108 %; docs/validation.md round 16). A regression bound, not an accuracy target.
    # Round 18 (kernel cost anchored): 19.8 % (the H200 405B rows +14 -> +10 %).
    # Round 19 (attention at its measurement): 20.8 % (the Blackwell 8B rows about a point faster).
    "mlperf_training_llama31": 21.5,
    # Round 22, validation only: AWS's Trainium1 serving benchmarks (Transformers NeuronX 2.18,
    # Llama 2 7B/70B and Llama 3 70B at batch 1-8; validation/inference_neuron.py), predicted with
    # the Neuron serving fit made on Trainium2's rows: 16.4 % over 40 cases (TPOT -16..+6 %, TTFT
    # -9..-54 %: prefill past 1,024 tokens, not explained; docs/validation.md round 22). A
    # regression bound, not an accuracy target.
    "neuron_trn1_serving": 17.5,
}


@pytest.fixture(scope="module")
def ampere_cv():  # type: ignore[no-untyped-def]
    return cross_validate(AMPERE_TABLES)


def test_folds_are_the_full_fit_each_table_and_each_family() -> None:
    cases = all_cases(AMPERE_TABLES)
    assert folds(cases) == [Fold("none"), Fold("table", "korthikanti2022"), Fold("table", "megatron_sc21"),
                            Fold("family", "ampere")]
    fold = Fold("table", "megatron_sc21")
    assert all(fold.holds_out(c) == (c.table == "megatron_sc21") for c in cases)
    assert not any(Fold("none").holds_out(c) for c in cases)


def test_a_left_out_table_is_predicted_by_a_fit_on_the_other_table_only(ampere_cv) -> None:  # type: ignore[no-untyped-def]
    cases = all_cases(AMPERE_TABLES)
    others = [c for c in cases if c.table != "korthikanti2022"]
    efficiency, _ = fit_dense("ampere", [c for c in others if c.skip is None])
    expected = {c.label: r.predicted for c, r in zip(cases, run(cases, lambda _: efficiency), strict=True)
                if c.table == "korthikanti2022"}
    got = {r.case.label: r.predicted for r in ampere_cv.table_out if r.case.table == "korthikanti2022"}
    assert got == pytest.approx(expected, rel=1e-12)
    # ... which is not the in-sample prediction: the fold really refitted.
    in_sample = {r.case.label: r.predicted for r in ampere_cv.in_sample if r.case.table == "korthikanti2022"}
    assert any(abs(got[k] - in_sample[k]) > 1e-6 * in_sample[k] for k in got)


def test_a_family_with_no_other_family_falls_back_to_the_priors(ampere_cv) -> None:  # type: ignore[no-untyped-def]
    cases = all_cases(AMPERE_TABLES)
    priors, source = fit_dense("ampere", [])
    assert source.rows == 0 and priors.matmul["bf16"] == PRIORS["matmul.bf16"][0]
    expected = [r.predicted for r in run(cases, lambda _: priors)]
    assert [r.predicted for r in ampere_cv.family_out] == pytest.approx(expected, rel=1e-12)
    # The priors are worse than any fit on published rows: out of sample is the harder test.
    assert mape(ampere_cv.family_out) > mape(ampere_cv.table_out) > mape(ampere_cv.in_sample)


def test_in_sample_is_the_shipped_procedure(ampere_cv) -> None:  # type: ignore[no-untyped-def]
    cases = all_cases(AMPERE_TABLES)
    efficiency, _ = fit_dense("ampere", [c for c in cases if c.skip is None])
    expected = [r.predicted for r in run(cases, lambda _: efficiency)]
    assert [r.predicted for r in ampere_cv.in_sample] == pytest.approx(expected, rel=1e-12)


def test_a_family_without_rows_takes_its_software_stack_then_every_family() -> None:
    cases = all_cases(["korthikanti2022", "neuron_trn"])
    calibration = Calibration(cases)
    assert calibration.donors("dense", "ampere") == ("ampere",)
    assert calibration.donors("dense", "hopper") == ("ampere",)  # same stack (GPU)
    assert calibration.donors("dense", "trainium2") == ("trainium1",)
    assert calibration.donors("dense", "tpu-v4") == ("ampere", "trainium1")  # no TPU rows: everyone's
    assert calibration.donors("MoE", "ampere") == ()  # no MoE rows anywhere: the priors
    hopper, ampere = calibration.dense("hopper")[0], calibration.dense("ampere")[0]
    # Hopper borrows Ampere's fit: its own GEMM and attention measurements times Ampere's
    # realisations of its own (Ampere's attention: FlashAttention-2's measured rate, round 14),
    # and Ampere's HBM efficiency (Hopper has no streaming measurement)
    measured = calibration.anchors
    realisation = ampere.matmul["bf16"] / measured["ampere"]["matmul.bf16"]
    assert hopper.family == "hopper"
    assert hopper.matmul["bf16"] == pytest.approx(measured["hopper"]["matmul.bf16"] * realisation, abs=2e-4)
    assert hopper.hbm == pytest.approx(ampere.hbm, abs=2e-4)
    attention_realisation = ampere.attention / measured["ampere"]["attention"]
    assert hopper.attention == pytest.approx(measured["hopper"]["attention"] * attention_realisation, abs=2e-4)


def test_a_held_out_fold_never_sees_its_rows() -> None:
    cases = all_cases(AMPERE_TABLES)
    # Corrupting the held-out rows' published values must not change their out-of-sample prediction.
    fold = Fold("table", "megatron_sc21")
    honest = predict_held_out(cases, fold)
    from dataclasses import replace

    corrupted = [replace(c, published=c.published * 3) if fold.holds_out(c) else c for c in cases]
    assert predict_held_out(corrupted, fold) == honest


def test_summary_rows_and_parameter_counts(ampere_cv) -> None:  # type: ignore[no-untyped-def]
    summary = summarise(ampere_cv)
    assert set(summary.tables) == set(AMPERE_TABLES)
    ampere = summary.families["ampere"]
    # bf16 matmul + 6 shared kernels/fabric; attention is A100's FlashAttention-2 measurement, not fitted
    assert ampere.own_rows == 19 and ampere.own_parameters == 7
    assert {s.stage: s.families for s in ampere.stages}["MoE"] == []  # priors: no MoE rows here
    assert len(summary.rows) == 19


def test_the_stored_cross_validation_is_current_and_covers_every_table() -> None:
    """`clusterplan calibrate` stores crossval.yaml; its in-sample column must still be what
    `validate` computes, or the estimator changed without a refit and the stored
    out-of-sample figures describe a model that no longer exists."""
    stored = load_crossval()
    assert stored is not None
    results = by_table(run(all_cases()))
    assert set(stored.tables) == set(known_tables())
    for name, rows in results.items():
        if name in MEMORY_ONLY_TABLES:  # no published speed: nothing to be current about
            assert stored.tables[name].mape_pct is None and math.isnan(mape(rows)), name
            continue
        assert stored.tables[name].mape_pct == pytest.approx(mape(rows), abs=0.05), name
        assert stored.tables[name].mape_out_of_sample_pct is not None, name
    assert stored.families["trainium2"].own_parameters < stored.families["trainium1"].own_parameters


def test_out_of_sample_error_does_not_regress() -> None:
    stored = load_crossval()
    assert stored is not None
    assert set(OUT_OF_SAMPLE_BOUNDS) == set(known_tables()) - MEMORY_ONLY_TABLES
    for table in MEMORY_ONLY_TABLES:  # no published speed, nothing to predict out of sample
        assert stored.tables[table].rows == 0 and stored.tables[table].mape_out_of_sample_pct is None
    for table, bound in OUT_OF_SAMPLE_BOUNDS.items():
        error = stored.tables[table].mape_out_of_sample_pct
        assert error is not None and error <= bound, f"{table}: out of sample {error} % > {bound} %"


def test_validate_json_has_out_of_sample_and_fits_for_every_table() -> None:
    result = CliRunner().invoke(app, ["validate", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    for name, table in record["tables"].items():
        training = name in TABLES  # serving tables (inference_*, mlperf_inference) have no memory check
        assert (table["fits_fraction"] is not None) == training, name
        if name in MEMORY_ONLY_TABLES:  # memory tests only: no speed, so no error of any kind
            assert table["mape_out_of_sample_pct"] is None and table["mape_at_defaults_pct"] is None, name
            assert table["rows_modelled"] == 0 and all(row["fits"] is not None or row["skipped"]
                                                       for row in table["rows"]), name
            continue
        assert table["mape_out_of_sample_pct"] is not None, name
        assert table["mape_at_defaults_pct"] is not None, name
        for row in table["rows"]:
            if row["recipe_fields"]:
                assert row["error_at_defaults_pct"] is not None or row["error_pct"] is None, row["label"]
            else:
                assert row["error_at_defaults_pct"] == row["error_pct"], row["label"]
    assert record["cross_validation"].startswith("stored")
    assert "own_parameters" in record["families"]["hopper"]
    means = {(m["over"], m["stage"]): m for m in record["means"]}
    assert set(means) == {("tables", "all"), ("rows", "all"), ("rows", "dense"), ("rows", "MoE"), ("rows", "serving")}
    assert means[("rows", "all")]["count"] == sum(means[("rows", s)]["count"] for s in ("dense", "MoE", "serving"))
    assert means[("tables", "all")]["count"] == sum(
        1 for name, t in record["tables"].items() if t["rows_modelled"] and name != "inference_wide_ep")


def test_validate_cross_validate_recomputes() -> None:
    result = CliRunner().invoke(app, ["validate", "--cross-validate", "--table", "korthikanti2022",
                                      "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    table = record["tables"]["korthikanti2022"]
    # One table of one family: leaving it out leaves the priors, which miss by more.
    assert table["mape_out_of_sample_pct"] > table["mape_pct"]
    assert record["cross_validation"].startswith("computed")


def test_validate_refuses_bad_workers() -> None:
    result = CliRunner().invoke(app, ["validate", "--cross-validate", "--workers", "0"])
    assert result.exit_code == 2
    assert "--workers" in result.output


def test_an_anchored_parameter_transfers_as_the_borrowers_measurement_times_the_donors_realisation() -> None:
    """A kernel-level measurement anchors a parameter: the donors fit its realisation r (their
    end-to-end value over their measurement), and a family borrowing the fit gets its own
    measurement times r; a borrower without a measurement gets the donors' value; with no
    anchors nothing changes."""
    from clusterplan.validation.calibrate import ANCHORED_CEILING, fit_dense_shared

    rows = [c for c in all_cases(["korthikanti2022"]) if c.skip is None]
    free, _ = fit_dense_shared(rows, {})
    anchors = {"ampere": {"matmul.bf16": 0.80, "hbm": 0.90}, "tpu-v4": {"matmul.bf16": 0.88}}
    fit, source = fit_dense_shared(rows, anchors)
    assert fit.anchored == frozenset({"matmul.bf16", "hbm"}) and source.anchored == ("hbm", "matmul.bf16")
    ampere = fit.efficiency("ampere")
    realisation = ampere.matmul["bf16"] / 0.80
    assert fit.efficiency("tpu-v4").matmul["bf16"] == pytest.approx(min(0.88 * realisation, ANCHORED_CEILING),
                                                                   abs=1e-4)
    # tpu-v4 has no HBM measurement: it takes the donors' (ampere's) HBM efficiency
    assert fit.efficiency("tpu-v4").hbm == pytest.approx(ampere.hbm, abs=1e-4)
    assert fit.efficiency("hopper").matmul["bf16"] == pytest.approx(ampere.matmul["bf16"], abs=1e-4)
    # a reparameterisation: the family's own rows are described about as well either way
    assert ampere.matmul["bf16"] == pytest.approx(free.efficiency("ampere").matmul["bf16"], abs=0.03)
    assert free.anchored == frozenset() and free.efficiency("tpu-v4").matmul == free.efficiency("ampere").matmul


def test_a_low_precision_gemm_transfers_relative_to_the_borrowers_own_bf16_measurement() -> None:
    """A family whose bf16 GEMM is measured but not its fp8 one (MI300X) is taken to reach the
    measured donors' fp8/bf16 ratio of its own bf16 fraction, not the donors' fp8 fraction; a
    family with no measurement at all takes the donors' mean."""
    from clusterplan.validation.calibrate import DenseFit

    anchors = {"hopper": {"matmul.bf16": 0.80, "matmul.fp8": 0.70}, "cdna3": {"matmul.bf16": 0.60}}
    fit = DenseFit(("matmul.bf16", "matmul.fp8"), (0.9, 0.95), frozenset({"matmul.bf16", "matmul.fp8"}),
                   anchors, ("nemo_perf",), ("hopper",))
    assert fit.measured("cdna3", "matmul.fp8") == pytest.approx(0.60 * 0.70 / 0.80)
    assert fit.measured("cdna3", "matmul.bf16") == pytest.approx(0.60)
    assert fit.measured("blackwell", "matmul.fp8") == pytest.approx(0.70)
    assert fit.measured("hopper", "matmul.fp8") == pytest.approx(0.70)


def test_the_serving_fit_steps_over_the_simulators_event_noise() -> None:
    """A simulated metric moves in small steps (admissions and batch compositions change): a
    staircase of 0.2 % treads around a slope. A 0.1 % difference quotient sees flat treads and the
    fit stops at its start; the serving stage's 3 % step sees the slope and finds the optimum."""
    target = 0.9

    def residuals(x: np.ndarray) -> np.ndarray:
        tread = 0.002
        return np.array([np.round((x[0] - target) / tread) * tread])

    start, lower, upper = np.array([0.8]), np.array([0.3]), np.array([0.95])
    stuck = _least_squares(residuals, start, lower, upper, DIFF_STEP["dense"])
    found = _least_squares(residuals, start, lower, upper, DIFF_STEP["serving"])
    assert abs(stuck[0] - start[0]) < 0.01
    assert abs(found[0] - target) < 0.01


def test_validate_names_the_tables_that_change_at_the_cli_defaults() -> None:
    """Under the summary, one dim line each: the tables whose printed plans fit a different
    number of times, and those whose in-sample error moves, with the recipe-only settings at the
    CLI's defaults (NeMo dense: 22/23 with the recipes, 23/23 with the recompute chosen)."""
    result = CliRunner().invoke(app, ["validate", "--table", "mlperf_training", "--table", "nemo_perf",
                                      "--table", "megatron_sc21"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "at the CLI's defaults" in line]
    assert len(lines) == 2, lines
    fits, errors = lines
    assert fits.startswith("fits with the recipe-only settings") and "nemo_perf 23/23" in fits
    assert "mlperf_training" not in fits  # all 21 fit either way
    assert errors.startswith("in-sample error with the recipe-only settings")
    assert re.search(r"mlperf_training \d+\.\d %", errors) and "megatron_sc21" not in errors


def test_a_kernels_fixed_cost_is_anchored_at_the_smallest_launch_bound_gemm() -> None:
    """A GEMM below LAUNCH_BOUND of the peak measures a kernel's fixed cost (its arithmetic at the
    peak is under 5 % of its time): H100's from XLA's sm_90 512^3 GEMM (6.59 us, the shorter of
    its two launch-bound entries), B200's from sm_100's 256^3 (4.96 us). TPU v5e's 1024^3
    jnp.matmul at 0.091 of peak is timed with its Python dispatch and stays out; families with
    only large GEMMs get no such anchor."""
    from clusterplan.catalog import load_kernels
    from clusterplan.validation.calibrate import LAUNCH_BOUND, kernel_anchors

    anchors = kernel_anchors()
    assert anchors["hopper"]["kernel_overhead_us"] == pytest.approx(2 * 512**3 / 40.72e12 * 1e6, rel=1e-3)
    assert anchors["blackwell"]["kernel_overhead_us"] == pytest.approx(2 * 256**3 / 6.765e12 * 1e6, rel=1e-3)
    assert "kernel_overhead_us" not in anchors["tpu-v5e"] and "kernel_overhead_us" not in anchors["ampere"]
    # a launch-bound entry is not a GEMM-efficiency measurement: the large-GEMM anchors stand
    assert anchors["hopper"]["matmul.bf16"] == pytest.approx(0.803)
    # the XLA 1024^3 B200 GEMM (0.128 of peak) is above the bound: a size point, not a launch cost
    assert all(e.fraction_of_peak >= LAUNCH_BOUND for e in load_kernels().entries
               if e.kind == "gemm" and e.chip == "b200" and e.shape != (256, 256, 256))


def test_an_anchored_fixed_cost_is_microseconds_not_a_capped_fraction() -> None:
    """The fraction ceiling applies to fractions of a peak only: an anchored kernel cost is the
    measurement times the realisation, however many microseconds that is."""
    from clusterplan.validation.calibrate import fit_dense_shared

    rows = [c for c in all_cases(["korthikanti2022"]) if c.skip is None]
    fit, source = fit_dense_shared(rows, {"ampere": {"kernel_overhead_us": 6.0}})
    assert fit.anchored == frozenset({"kernel_overhead_us"}) and source.anchored == ("kernel_overhead_us",)
    realisation = fit.values[fit.names.index("kernel_overhead_us")]
    assert fit.efficiency("ampere").kernel_overhead_s == pytest.approx(6.0e-6 * realisation, rel=1e-3)
    assert fit.efficiency("ampere").kernel_overhead_s > 1e-6  # not capped at 0.99 us


def test_attention_is_taken_at_its_kernel_measurement_not_fitted() -> None:
    """Round 19: where a fit's donors measure the reference attention kernel, the attention
    efficiency is that measurement (realisation 1), out of the fitted parameters and the count;
    a borrower gets its own measurement, and without one the donors'. Without a measurement it
    is fitted as before."""
    from clusterplan.validation.calibrate import AT_MEASUREMENT, fit_dense_shared

    assert "attention" in AT_MEASUREMENT
    rows = [c for c in all_cases(["korthikanti2022"]) if c.skip is None]
    fit, source = fit_dense_shared(rows, {"ampere": {"attention": 0.4321}, "hopper": {"attention": 0.5}})
    assert fit.efficiency("ampere").attention == pytest.approx(0.4321)
    assert fit.efficiency("hopper").attention == pytest.approx(0.5)
    assert fit.efficiency("tpu-v4").attention == pytest.approx(0.4321)  # the donors' measurement
    assert "attention" not in source.parameters and source.measured == ("attention",)
    assert "attention" not in source.anchored
    assert "at the kernel measurement" in source.describe("ampere")
    free, free_source = fit_dense_shared(rows, {})
    assert "attention" in free_source.parameters and free_source.measured == ()
    assert free.efficiency("ampere").attention != pytest.approx(0.4321, abs=1e-3)


def test_means_weigh_tables_and_rows_each_once_and_leave_wide_ep_out() -> None:
    """summary_means: the table mean averages each table's MAPE; the row means average every
    row's absolute error, per stage too; wide EP is in neither; a table filter limits both."""
    from clusterplan.specs.accuracy import CrossValSummary, RowErrors, TableErrors
    from clusterplan.validation.crossval import summary_means

    def row(table: str, stage: str, error: float, out: float, family: float | None) -> RowErrors:
        return RowErrors(table=table, label=f"{table} {error}", family="hopper", stage=stage, chips=8,
                         higher_is_faster=True, error_pct=error, error_out_of_sample_pct=out,
                         error_family_out_pct=family)

    rows = [row("a", "dense", 10.0, -20.0, 30.0), row("a", "dense", -2.0, 4.0, None),
            row("a", "dense", 3.0, 6.0, 9.0), row("b", "serving", -40.0, 50.0, 60.0),
            row("inference_wide_ep", "serving", 250.0, 250.0, 250.0)]
    tables = {"a": TableErrors(rows=3, mape_pct=5.0, mape_out_of_sample_pct=10.0, mape_family_out_pct=19.5),
              "b": TableErrors(rows=1, mape_pct=40.0, mape_out_of_sample_pct=50.0, mape_family_out_pct=60.0),
              "inference_wide_ep": TableErrors(rows=1, mape_pct=250.0, mape_out_of_sample_pct=250.0,
                                                      mape_family_out_pct=250.0)}
    summary = CrossValSummary(tables=tables, families={}, rows=rows)
    means = {(m.over, m.stage): m for m in summary_means(summary)}
    assert means[("tables", "all")].count == 2
    assert means[("tables", "all")].mape_out_of_sample_pct == pytest.approx(30.0)
    assert means[("rows", "all")].count == 4
    assert means[("rows", "all")].mape_pct == pytest.approx((10 + 2 + 3 + 40) / 4, abs=0.01)
    assert means[("rows", "all")].mape_out_of_sample_pct == pytest.approx((20 + 4 + 6 + 50) / 4, abs=0.01)
    assert means[("rows", "all")].mape_family_out_pct == pytest.approx((30 + 9 + 60) / 3, abs=0.01)
    assert means[("rows", "dense")].mape_out_of_sample_pct == pytest.approx(10.0)
    assert ("rows", "MoE") not in means  # no MoE rows: no MoE mean
    only_a = {(m.over, m.stage): m for m in summary_means(summary, {"a"})}
    assert only_a[("tables", "all")].count == 1 and only_a[("rows", "all")].count == 3
