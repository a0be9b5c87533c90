"""Accuracy bounds on the published tables (issue #2), and the honesty of the report."""

from __future__ import annotations

import math

import pytest

from clusterplan.catalog import hardware_for, load_efficiency
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import Hardware, estimate
from clusterplan.validation.calibrate import fit_family
from clusterplan.validation.cases import TABLES, all_cases, known_tables, stack_epochs
from clusterplan.validation.harness import (
    by_table,
    defaults_plan,
    fits_fraction,
    fits_fraction_at_defaults,
    mape,
    mape_at_defaults,
    memory_tested,
    run,
    run_case,
)
from clusterplan.validation.registry import MEMORY_ONLY_TABLES

#: In-sample MAPE bounds per table (percent): regression guards on the rows the fit saw. The
#: accuracy a user meets is the out-of-sample error, guarded in tests/test_crossval.py.
BOUNDS = {
    "korthikanti2022": 5.0,
    "megatron_sc21": 5.0,
    "megatron_core_h100_2024": 10.0,
    # Issue #13 fits the MLPerf GPT-3 rows too (more fp8 data outside the NeMo tables): in
    # sample this table goes from 8.3 % to 11.0 %, out of sample (table left out) from 32.4 % to
    # 21.7 %, and the other tables' out-of-sample error improves on average (docs/validation.md).
    # 7.3 % since round 11 (10.0 % before): the Blackwell chips' sustained clocks are fitted on
    # its B200/GB200/GB300 rows (GB200 rows +15..+24 -> +1..+8 %); out of sample unchanged
    # (17.7 %), since no other table holds dense rows of two Blackwell chips.
    "nemo_perf": 8.0,
    "mlperf_training": 10.0,
    # Issue #4's 12 %: 9.9 % since issue #13 (recipes' bf16 gradient reduction; the MLPerf rows
    # in the dense fit moved Hopper's parameters; 10.3 % out of sample, docs/moe.md).
    # 12.5 % since GPT-OSS-120B's sliding-window attention is modelled (its row +32.7 -> +41.3 %:
    # the small-expert MoE cost it exposes is not modelled yet; docs/moe.md). 12.0 % since round 5
    # runs window layers at the attention kernel's measured short-span rate (GPT-OSS +38 %).
    # 16.8 % since round 9: the rows run their recipes' de-duplicating dispatch (HybridEP), which
    # the Megatron-MoE-ModelZoo DeepEP rows validate; Qwen3-30B on two H100 nodes goes -8 -> +48 %
    # (the small-expert H100 cost the flat all-to-all's extra bytes stood in for; docs/moe.md).
    # 14.2 % since round 10: MoE token permutations and a per-local-expert grouped-GEMM cost
    # (out of sample 18.6 -> 15.7 %; docs/moe.md). 15.1 % since round 11: GB200's sustained
    # clock (0.83, from the dense rows) slows its two Qwen3 rows (-3/-7 -> -8/-14 %). 16.1 % since
    # round 12: Hopper's refit with each row's attention library (bf16 GEMMs 0.73 -> 0.70,
    # attention 0.28 -> 0.32) makes Qwen3-30B on two H100 nodes faster still (+34 -> +44 %).
    # 16.8 % since round 18 (Hopper's kernel cost anchored at 6.6 us; its refit).
    "nemo_perf_moe": 17.5,
    # Megatron-MoE-ModelZoo (round 9, fitted in the MoE stage): 20.2 %; intra-node EP8 on H100
    # -26/-37 %, long context -11 % (16k) to -40 % (128k) from Hopper's low fitted attention.
    # 20.2 % since round 10 over 14 rows (DeepSeek-V3 on 256 GB200 joined). 14.0 % since round 13
    # (tightened): the reference attention anchored to its measured rate (Hopper 0.32 -> 0.43 of
    # peak), the long-context rows -34..-13 -> -16..-5 %. 16.1 % since round 18: a kernel's fixed
    # cost anchored at XLA's measured 6.6 us (Hopper's fitted 19 us had let its attention sit at
    # 0.41; the refit 0.38): the 16k-128k-token rows -6..-19 -> -9..-25 %. 10.8 % since round 19
    # (tightened): attention at its measured 0.50, the span curve absolute.
    "megatron_moe_modelzoo": 11.5,
    "maxtext_tpu": 10.0,
    "neuron_trn": 10.0,
    # Issue #7 asks for <= 15 % (throughput) and <= 20 % (latency, online rows included); today's
    # step model reaches 6.8 % (the 109 rows of TensorRT-LLM's current software stack; the 131
    # v0.14.0 rows are an older stack, as for the NeMo tables), 13.5 % and 13.4 %: all met;
    # these bounds guard against regressions (docs/serving.md). 5.6 % since round 7's serving fit
    # converged (a 3 % finite-difference step over the simulator's event noise). 7.0 % since
    # round 12 (TensorRT-LLM's context attention at FlashAttention-3's rate; Hopper's refit). 6.2 %
    # since round 13 (tightened; Hopper's refit with attention anchored, decode HBM 0.81 -> 0.87).
    # 7.1 % since round 18: Hopper's kernel cost anchored at XLA's measured 6.6 us (was 19 us);
    # its serving refit moves decode HBM 0.86 -> 0.78 and the step overhead 0.38 -> 1.11 ms, and
    # the 8B rows with 2k-20k-token prompts go -5..-9 -> -9..-15 %.
    "inference_throughput": 8.0,
    # The kernel-anchored refit (Hopper matmul up, attention down; issue #13 round 4) moved the
    # server rows 13.6 -> 15.4 % in sample, 16.6 -> 17.0 % out of sample; S0113's TTFT joined the
    # latency table at -21 %. 15.4 % since round 19 (loosened): Trainium2's serving rows refit on
    # Trainium1's dense refit under the absolute attention span curve (13.6 -> 15.4 %).
    "inference_latency": 16.0,
    # Round 5: the refit after MI300X's fp8 GEMM transfer and the CP/window attention spans moved
    # Hopper's serving HBM efficiency (0.87 -> 0.83) and the server rows 15.1 -> 16.5 % in sample;
    # out of sample they went 17.0 -> 16.9 % (docs/validation.md). 14.4 % in sample since round 7's
    # serving fit converged.
    "inference_server": 15.5,
    # A regression bound, not an accuracy target: 39.7 % in sample after the refit that includes
    # it (with the sourced mean prompt of 222 tokens), 25.2 % since round 5 takes MI300X's fp8 GEMM
    # as its measured bf16 one times Hopper's fp8/bf16 ratio (0.64 -> 0.49 of peak); MI300X
    # Interactive is still the largest error (docs/validation.md). 26.8 % since round 6 (SM sharing
    # of overlapped collectives moved Hopper's fitted attention, which MI300X's dense stage borrows).
    # 27.5 % since round 7: the converged Hopper serving fit makes its four rows 2 points faster.
    # 24.6 % since round 8: the rows run their configs' token budgets, schedulers and admission.
    # 21.2 % since round 9 over 22 rows: the ten mixtral-8x7b rows (NVIDIA H100/H200/GH200, AMD
    # MI300X/MI325X) join the serving fit; the Hopper ones +8 to +20 % (MoE serving too fast).
    # 19.0 % since round 10 over 25 rows (llama3.1-405b Offline on B200, GB200, GB300 joined).
    # 22.0 % since round 12: MI300X borrows the NVIDIA families' dense fit, whose bf16/fp8 GEMM
    # efficiencies Hopper's refit traded for attention (its rows +23..+118 -> +31..+161 %). 20.9 %
    # since round 13 (attention anchored).
    "mlperf_inference": 22.0,
    # Round 16, never fitted (a test set; in sample = out of sample): 20.0 % over 50 rows.
    "mlperf_training_llama31": 21.0,
}

#: Fewest modelled rows per table; the Trainium2 latency table publishes only two
#: single-request configurations without speculative decoding (TTFT and TPOT of each), and
#: only seven MoE rows measure the current NeMo software stack of their chip family; the
#: MT-NLG paper prints three iteration times, BigScience's BLOOM README three, and PaLM's Table 3
#: gives the layout of its own row only; torchtitan's benchmarks have two runs on a catalog chip (H200);
#: AXLearn's Table 3 has eight AXLearn rows; the Megatron-MoE-ModelZoo Qwen3 readme 13 Qwen3-235B-A22B
#: rows (its Qwen3-Next row has linear-attention layers), and that table adds the final DeepSeek-V3 row
#: of NVIDIA's GB200 guide (Megatron-LM @ 79e8592bb7): 14.
MIN_MODELLED = {"inference_latency": 4, "nemo_perf_moe": 7, "mtnlg_2022": 3, "bloom_176b": 3, "palm_table3": 1,
                 "torchtitan": 2, "axlearn_2025": 8, "megatron_moe_modelzoo": 14,
                 # MLPerf Inference v5.1's six deepseek-r1 rows (NVIDIA's own B200, GB200 and GB300
                 # Offline and Server submissions; partners' repeats of those systems not added) and
                 # the five TensorRT-LLM runs of tables/wide_ep_published.csv
                 "inference_wide_ep": 11,
                 # llama3.1-405b Server and Interactive on B200, GB200 and GB300 (the GB200
                 # Interactive row listed, not modelled)
                 "mlperf_inference_long_prompts": 4,
                 # the Megatron-Bridge recipes memory-tested (169 of 230 at 067f987df0)
                 "megatron_bridge_recipes": 160,
                 # MLPerf Training v5.0/v5.1 Llama 3.1: 50 of 61 submissions modelled
                 "mlperf_training_llama31": 50}


#: Every published training run ran, so its configuration fits in memory (issue #13): the
#: fewest rows per training table that the memory model may call too big is 5 %.
MIN_FITS_FRACTION = 0.95


@pytest.fixture(scope="module")
def results_by_table() -> dict[str, list]:  # type: ignore[type-arg]
    return by_table(run(all_cases()))


#: Tables whose runs the memory model does not all fit yet, at today's fraction, each with why:
#: AXLearn's two Qwen3-30B-A3B rows at 32k tokens (v5p: its remat offloads Q/K/V, the experts'
#: gate/up outputs and the router outputs to host memory, which no plan setting expresses; B200:
#: 217 GiB of 168, most of it the saved expert activations of every routed token).
MIN_FITS_EXCEPTIONS = {"axlearn_2025": 0.75}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_published_training_runs_fit_in_memory(results_by_table: dict[str, list], table: str) -> None:  # type: ignore[type-arg]
    results = results_by_table[table]
    fraction = fits_fraction(results)
    too_big = [r.case.label for r in results if r.fits is False]
    bound = MIN_FITS_EXCEPTIONS.get(table, MIN_FITS_FRACTION)
    assert fraction >= bound, f"{table}: {fraction:.0%} fit; too big: {too_big}"


#: The same memory test as a user meets it: the printed plan with the settings only the recipe
#: gives (Case.recipe_fields) at the CLI's defaults, and the recompute `train` chooses when the
#: default does not fit (training/recompute.py). NeMo's dense rows: 15/23 with fp32 gradient
#: buffers as the default, 19/23 since the default is 16-bit (the recipes' own), 23/23 since the
#: recompute left open is chosen to fit (round 8): the two FSDP Llama 3 70B FP8 rows whose
#: recipes offload 20-40 layers' activations, the GB300 MXFP8 70B row that needs its recipe's
#: fp8 parameters and Nemotron-340B. MLPerf's GPT-3 rows: 19/21 with fp32 as the default, 21/21
#: now.
MIN_FITS_AT_DEFAULTS = {"nemo_perf": 1.0, "nemo_perf_moe": 1.0, "mlperf_training": 1.0}


@pytest.mark.parametrize("table", sorted(MIN_FITS_AT_DEFAULTS))
def test_printed_plans_fit_at_the_cli_defaults(results_by_table: dict[str, list], table: str) -> None:  # type: ignore[type-arg]
    results = results_by_table[table]
    assert any(r.case.recipe_fields for r in results), f"{table}: no row states its recipe-only settings"
    fraction = fits_fraction_at_defaults(results)
    too_big = [r.case.label for r in results if r.fits_at_defaults is False]
    assert fraction >= MIN_FITS_AT_DEFAULTS[table], f"{table}: {fraction:.0%} fit at defaults; too big: {too_big}"


def test_fits_at_defaults_resets_only_the_recipe_fields(results_by_table: dict[str, list]) -> None:  # type: ignore[type-arg]
    """A row whose recipe offloads activations does not fit at the defaults (no offload, the
    default recompute): at defaults it runs with the recompute `train` would choose, which
    fits; a row without recipe-only settings is its own memory test at defaults."""
    nemo = results_by_table["nemo_perf"]
    offloaded = [r for r in nemo if r.case.plan is not None and r.case.plan.offload_layers > 0]
    assert offloaded
    for r in offloaded:
        assert r.case.model is not None and r.case.plan is not None and r.capacity_bytes is not None
        hardware = Hardware(system=r.case.system, chip=hardware_for(r.case.system).chip,
                            efficiency=load_efficiency(hardware_for(r.case.system).chip.family))
        plain = defaults_plan(r.case)
        assert plain is not None and plain.recompute == "selective" and plain.offload_layers == 0
        plain_memory = float(estimate(r.case.model, hardware, PlanBatch.from_plans([plain], r.case.model)).memory[0])
        assert plain_memory > r.capacity_bytes
        chosen = defaults_plan(r.case, hardware)
        assert chosen is not None and chosen != plain
        assert r.memory_bytes_at_defaults is not None and r.memory_bytes_at_defaults <= r.capacity_bytes
    for r in results_by_table["megatron_sc21"]:
        assert not r.case.recipe_fields
        assert r.memory_bytes_at_defaults == r.memory_bytes


#: In-sample MAPE with the recipe-only settings at the CLI's defaults: what a user who types a
#: row's printed plan gets (validate's "in sample ... at the CLI's defaults"). Round 7: NeMo dense
#: 7.4 % (10.6 % with the recipes' settings: without TP overlap its H100 rows lose the optimism
#: of the fit), NeMo MoE 15.5 % (21.4 % when the default routing skew was 0.2; the rest is TP
#: overlap and recompute), MLPerf 15.5 % (7.7 %: its rows need the recipes' TP overlap).
#: nemo_perf_moe 17.8 % since round 9 (its in-sample error rose with the recipes' dispatch credited;
#: at the defaults the rows dispatch flat, as a user who types the printed plan gets). 23.9 % since
#: round 10 (14.2 % with the recipes' settings): the flat all-to-all the defaults dispatch with
#: also sorts and unsorts the received chunks (two more permutation passes a direction), while the
#: fit, on the recipes' de-duplicating dispatch, took the per-layer cost down (Hopper 219 -> 160 us).
#: 24.7 % since round 11 (GB200's sustained clock; the rows above).
MAX_MAPE_AT_DEFAULTS = {"nemo_perf": 8.5, "nemo_perf_moe": 25.0, "mlperf_training": 17.0}


@pytest.fixture(scope="module")
def at_defaults_by_table() -> dict[str, list]:  # type: ignore[type-arg]
    return by_table(run(all_cases(sorted(MAX_MAPE_AT_DEFAULTS)), at_defaults=True))


@pytest.mark.parametrize("table", sorted(MAX_MAPE_AT_DEFAULTS))
def test_errors_at_the_cli_defaults(at_defaults_by_table: dict[str, list], table: str) -> None:  # type: ignore[type-arg]
    results = at_defaults_by_table[table]
    assert any(r.predicted_at_defaults is not None for r in results), table
    error = mape_at_defaults(results)
    assert error <= MAX_MAPE_AT_DEFAULTS[table], f"{table}: {error:.1f} % at the CLI's defaults"


def test_errors_at_defaults_reset_only_the_recipe_fields(at_defaults_by_table: dict[str, list]) -> None:  # type: ignore[type-arg]
    """MLPerf's submissions overlap TP communication (their config scripts), the CLI does not by
    default: each row is slower at the defaults, and its memory test is the memory-only one's."""
    for r in at_defaults_by_table["mlperf_training"]:
        if r.predicted is None:
            continue
        assert r.predicted_at_defaults is not None and r.predicted_at_defaults < r.predicted, r.case.label
        assert r.error_at_defaults is not None and r.error is not None and r.error_at_defaults < r.error
        memory_only = run_case(r.case)
        assert memory_only.predicted_at_defaults is None
        assert memory_only.memory_bytes_at_defaults == pytest.approx(r.memory_bytes_at_defaults, rel=1e-12)
    # A row without recipe-only settings is its own prediction at defaults.
    for r in run(all_cases(["megatron_sc21"]), at_defaults=True):
        assert r.predicted_at_defaults is None and r.error_at_defaults == r.error


@pytest.mark.parametrize("table", sorted(BOUNDS))
def test_table_meets_its_bound(results_by_table: dict[str, list], table: str) -> None:  # type: ignore[type-arg]
    error = mape(results_by_table[table])
    assert error <= BOUNDS[table], f"{table}: MAPE {error:.2f}% > {BOUNDS[table]}%"


def test_every_table_is_validated_and_mostly_modelled(results_by_table: dict[str, list]) -> None:  # type: ignore[type-arg]
    assert set(results_by_table) == set(known_tables())
    for table, rows in results_by_table.items():
        # memory-only tables: modelled is memory-tested (no speed to compare)
        modelled = memory_tested(rows) if table in MEMORY_ONLY_TABLES else [r for r in rows if r.error is not None]
        assert len(modelled) >= MIN_MODELLED.get(table, 9), table


def test_rows_not_modelled_are_listed_with_a_reason(results_by_table: dict[str, list]) -> None:  # type: ignore[type-arg]
    for rows in results_by_table.values():
        for result in rows:
            if result.predicted is None:
                assert result.case.skip and len(result.case.skip) > 10


def test_korthikanti_rows_cover_both_recompute_settings(results_by_table: dict[str, list]) -> None:  # type: ignore[type-arg]
    labels = [r.case.label for r in results_by_table["korthikanti2022"]]
    assert sum("full recompute" in label for label in labels) == 4
    assert sum("SP+selective" in label for label in labels) == 5


def test_errors_are_signed_and_finite(results_by_table: dict[str, list]) -> None:  # type: ignore[type-arg]
    errors = [r.error for rows in results_by_table.values() for r in rows if r.error is not None]
    assert all(math.isfinite(e) for e in errors)
    assert any(e > 0 for e in errors) and any(e < 0 for e in errors)


def test_calibration_is_reproducible_and_improves_on_the_priors() -> None:
    cases = all_cases(["maxtext_tpu"])
    fit = fit_family("tpu-v4", cases)
    assert fit.rows == 6
    assert fit.mape_after <= fit.mape_before
    assert 0.3 <= fit.efficiency.matmul["bf16"] <= 0.95
    again = fit_family("tpu-v4", cases)
    assert again.efficiency == fit.efficiency


def test_committed_efficiencies_are_what_calibrate_produces() -> None:
    """`clusterplan calibrate` is reproducible: refitting gives the committed catalog values.

    The dense stage of every family is refitted (the MoE and serving stages hold it fixed and
    are guarded by the stored cross-validation in tests/test_crossval.py; refitting the serving
    stage simulates the MLPerf server runs thousands of times, minutes on two cores)."""
    from clusterplan.catalog import load_efficiency
    from clusterplan.validation.calibrate import calibrate
    from clusterplan.validation.stacks import ALL_FAMILIES

    calibration = calibrate(all_cases())
    for family in ALL_FAMILIES:
        refitted, committed = calibration.dense(family)[0], load_efficiency(family)
        assert refitted.matmul == pytest.approx(committed.matmul, rel=0.02), family
        assert refitted.attention == pytest.approx(committed.attention, rel=0.02), family
        assert refitted.hbm == pytest.approx(committed.hbm, rel=0.02), family
        assert refitted.sustained_clock == pytest.approx(committed.sustained_clock, rel=0.02), family


def test_a_family_with_two_chips_on_record_fits_each_chips_sustained_clock() -> None:
    """Blackwell's dense rows run on B200, GB200 and GB300 (two or more rows each): each gets
    its sustained-clock ratio; a family of one chip (Hopper's H100 rows) gets none, and a chip
    with a single row is not freed (one row and one parameter is a per-row factor)."""
    from clusterplan.validation.calibrate import SUSTAINED_MIN_ROWS, case_chip, stage_of, sustained_chips, usable

    dense = [c for c in usable(all_cases()) if stage_of(c) == "dense"]
    assert sustained_chips([c for c in dense if c.family == "blackwell"]) == ["b200", "gb200", "gb300"]
    assert sustained_chips([c for c in dense if c.family == "hopper"]) == []
    gb300 = [c for c in dense if case_chip(c) == "gb300"]
    b200 = [c for c in dense if case_chip(c) == "b200"]
    assert sustained_chips(gb300 + b200[:SUSTAINED_MIN_ROWS - 1]) == []
    fitted = load_efficiency("blackwell").sustained_clock
    assert set(fitted) == {"b200", "gb200", "gb300"}
    assert load_efficiency("hopper").sustained_clock == {}


def _nemo_row(container: str, tokens: float, system: str = "DGX-GB200", mbs: str = "4") -> dict[str, str]:
    return {"nemo_container": container, "system": system, "model": "Qwen3_30B_a3B", "num_gpus": "8",
            "precision": "MXFP8", "global_batch_size_seqs": "512", "micro_batch_size": mbs,
            "seq_len_tokens": "4096", "fsdp": "0", "tp": "1", "pp": "1", "cp": "1", "vp": "n/a", "ep": "8",
            "tokens_per_sec_per_gpu": str(tokens)}


def test_a_step_in_software_speed_on_an_identical_configuration_starts_a_new_stack() -> None:
    rows = [_nemo_row("26.04.01", 26112), _nemo_row("26.06", 40706) | {"fsdp": "", "vp": "1"},
            _nemo_row("26.08", 39936)]
    release, model, speedup = stack_epochs(rows)["blackwell"]
    assert (release, model) == ("26.06", "Qwen3_30B_a3B")
    assert speedup == pytest.approx(40706 / 26112)


def test_release_noise_and_retuned_configurations_do_not_start_a_new_stack() -> None:
    noise = [_nemo_row("26.06", 40706), _nemo_row("26.08", 39936), _nemo_row("26.09", 40706 * 1.15)]
    retuned = [_nemo_row("26.02", 9691, mbs="1"), _nemo_row("26.02.01", 26695, mbs="4")]
    assert stack_epochs(noise) == {}
    assert stack_epochs(retuned) == {}


def test_trtllm_releases_are_ordered_as_the_table_spells_them() -> None:
    from clusterplan.validation.inference_cases import engine_release

    spelled = ["0.14.0", "0.17", "v0.20 (PyTorch backend)",
               "v1.0-era docs (PyTorch backend since v0.19; exact release not stated)",
               "latest docs revision after v1.0 (PyTorch backend; release not stated)"]
    assert sorted(spelled, key=engine_release) == spelled


def test_serving_rows_of_an_older_trtllm_stack_are_listed_not_modelled(
        results_by_table: dict[str, list]) -> None:  # type: ignore[type-arg]
    """TensorRT-LLM 0.17 ran identical H100 configurations up to 2x faster than 0.14.0 (70B fp8
    TP1 128/2048: 446 -> 912 tok/s): the 0.14.0 rows are listed, not modelled; none newer is."""
    rows = results_by_table["inference_throughput"]
    old = [r for r in rows if "(0.14.0)" in r.case.label]
    assert len(old) == 131 and all(r.predicted is None for r in old)
    assert all("older software stack: TensorRT-LLM 0.17" in (r.case.skip or "") for r in old)
    assert sum(r.predicted is not None for r in rows) == 109


def test_moe_rows_of_an_older_blackwell_stack_are_listed_not_modelled(
        results_by_table: dict[str, list]) -> None:  # type: ignore[type-arg]
    rows = {r.case.label: r for r in results_by_table["nemo_perf_moe"]}
    old = rows["Qwen3_30B_a3B DGX-B200 x8 MXFP8 (NeMo 26.04.01)"]
    assert old.predicted is None and "older software stack: NeMo 26.06" in (old.case.skip or "")
    # H100 numbers did not move between releases: its 26.04.01 rows stay modelled.
    assert rows["GPT OSS 120B DGX-H100 x64 BF16 (NeMo 26.04.01)"].predicted is not None


def test_moe_rows_run_their_recipe_recompute(results_by_table: dict[str, list]) -> None:  # type: ignore[type-arg]
    """GPT-OSS on H100 re-runs the MoE norm and activation in backward (its recipe's
    recompute_modules); the Qwen3 recipes recompute nothing."""
    rows = {r.case.label: r for r in results_by_table["nemo_perf_moe"] if r.predicted is not None}
    gpt_oss = rows["GPT OSS 120B DGX-H100 x64 BF16 (NeMo 26.04.01)"].case.plan
    assert gpt_oss.recompute == "selective" and gpt_oss.recompute_modules == ("layernorm", "moe_act")
    qwen = [r.case.plan for label, r in rows.items() if label.startswith("Qwen3")]
    assert qwen and all(plan.recompute == "none" for plan in qwen)


def test_offline_rows_use_the_published_kv_share_and_benchmark_size() -> None:
    """Configuration published with a row is used for that row: the KV share its notes state
    (else TensorRT-LLM's default 0.90) and its ``num_requests`` (else that of the nearest
    sequence length in the same methodology)."""
    from clusterplan.validation import inference_cases as ic

    rows = {r["row_id"]: r for r in ic._rows()}
    assert ic._kv_fraction(rows["H0633"]) == 0.95  # v0.17 notes: kv_cache_free_gpu_mem_fraction 0.95
    assert ic._kv_fraction(rows["H0996"]) == ic.TRTLLM_DEFAULT_KV_FRACTION == 0.90  # v0.14.0: not set
    assert ic._requests(rows["S0024"], list(rows.values())) == 3000  # printed
    assert ic._requests(rows["S0029"], list(rows.values())) == 1500  # 1024/2048: as 1000/2000
    assert ic._requests(rows["S0021"], list(rows.values())) == 3000  # 1000/1000


def test_maxtext_qkv_offloaded_rows_keep_their_projections() -> None:
    cases = [c for c in all_cases(["maxtext_tpu"]) if c.plan is not None]
    offloaded = [c for c in cases if c.plan is not None and c.plan.offload_qkv]
    assert len(offloaded) == 6 and all("128B" in c.label and "v5e" in c.label for c in offloaded)
    assert all(c.plan is not None and c.plan.recompute == "full" for c in offloaded)
