"""The MLPerf Training v5.0/v5.1 Llama 3.1 405B and 8B table (validation/cases_mlperf_llama.py)."""

from __future__ import annotations

import csv
from collections import Counter
from importlib import resources

import pytest

from clusterplan.validation.calibrate import VALIDATION_ONLY_TABLES
from clusterplan.validation.cases import TABLES
from clusterplan.validation.cases_mlperf_llama import (
    MIXTRAL_VOCAB,
    TABLE,
    mlperf_training_llama31,
    tokens_per_s_per_chip,
    training_seconds,
)


def _rows() -> list[dict[str, str]]:
    text = resources.files("clusterplan.validation").joinpath(f"tables/{TABLE}.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def _row(system: str, benchmark: str = "llama31_405b", round_: str = "v5.0") -> dict[str, str]:
    return next(r for r in _rows() if r["system"] == system and r["benchmark"] == benchmark
                and r["mlperf_round"] == round_)


def test_every_submission_comes_back_modelled_or_skipped_with_its_reason() -> None:
    assert TABLE in TABLES and TABLE in VALIDATION_ONLY_TABLES  # a test set: never fitted
    rows, cases = _rows(), mlperf_training_llama31()
    assert len(rows) == len(cases) == 61
    assert all(r["division"] == "closed" and r["source"].startswith("github.com/mlcommons/training_results_v5.")
               for r in rows)
    skipped = Counter(c.skip.split(" ")[0] for c in cases if c.skip)
    # 6 AMD-implementation rows, Lambda's missing config, Nebius' two unresolved B200 configs and
    # its two v5.1 H200 rows that republish the v5.0 runs.
    assert sum(skipped.values()) == 11
    assert sum("ran AMD's implementation" in (c.skip or "") for c in cases) == 6
    assert sum("byte-identical" in (c.skip or "") for c in cases) == 2
    modelled = [c for c in cases if c.skip is None]
    assert len(modelled) == 50 and {c.family for c in modelled} == {"hopper", "blackwell"}
    for case in modelled:
        plan = case.plan
        assert plan is not None and case.model is not None and case.assumptions
        assert plan.tp * plan.pp * plan.cp * plan.dp == plan.chips
        assert plan.dp * plan.micro_batch * plan.micro_batches == plan.global_batch
        assert plan.seq_len == 8192 and plan.recompute == "none" and plan.attention_kernel == "cudnn"


def test_a_row_with_logged_evaluation_by_hand() -> None:
    """IBM/CoreWeave GB200, 1,024 GPUs: runs of 53.20, 53.20, 53.18 min training 276,480 samples
    each, 144.68 s of it evaluating (median): 276,480 x 8192 / ((53.20 x 60 - 144.68) x 1024)."""
    row = _row("carina_ngpu1024_ngc25.04_nemo")
    assert training_seconds(row, 53.20, 276480) == pytest.approx(53.20 * 60 - 144.68)
    expected = 276480 * 8192 / ((53.20 * 60 - 144.68) * 1024)  # the median run (two equal)
    assert tokens_per_s_per_chip(row) == pytest.approx(expected, rel=1e-9)
    case = next(c for c in mlperf_training_llama31() if "carina_ngpu1024" in c.label)
    assert case.published == pytest.approx(expected) and case.metric == "tokens_per_s_per_chip"
    assert case.system is not None and case.system.name == "gb200-nvl72"
    plan = case.plan
    assert plan is not None
    assert (plan.tp, plan.pp, plan.vp, plan.cp, plan.dp, plan.micro_batch) == (4, 8, 8, 2, 16, 1)
    assert (plan.precision, plan.fp8_params, plan.sp, plan.overlap_tp) == ("fp8", True, True, True)
    # Llama 3.1 405B with the Mixtral tokenizer; 126 layers over 64 chunks, the embedding and the
    # loss counted as a layer each (ASYM_PP_EMBED/LOSS): 15 layers on the first and last stage.
    assert case.model is not None and case.model.vocab_size == MIXTRAL_VOCAB == 32768
    assert case.model.layers == 126 and (plan.first_stage_layers, plan.last_stage_layers) == (15, 15)


def test_a_row_without_evaluation_events_charges_them_at_a_third() -> None:
    """NVIDIA's v5.0 GB200 rows log no eval_start/eval_stop: 6 evaluations of 5,760 samples at a
    third of a trained sample beside 276,480 (or more) trained samples."""
    row = _row("tyche_ngpu512_ngc25.04_nemo")
    assert row["eval_seconds_median"] == ""
    minutes, samples = 100.0, 276480.0
    evaluated = float(row["n_evals_median"]) * 5760 / 3
    assert training_seconds(row, minutes, samples) == pytest.approx(6000.0 * samples / (samples + evaluated))


def test_fp4_and_8b_rows_take_their_own_settings() -> None:
    cases = {c.label: c for c in mlperf_training_llama31()}
    fp4 = next(c for label, c in cases.items() if "hsg_ngpu5120" in label)
    assert fp4.plan is not None and (fp4.plan.precision, fp4.plan.fp8_params, fp4.plan.overlap_tp) == (
        "fp4", False, False)  # config_common_fp4.sh turns the userbuffer TP overlap off
    small = next(c for label, c in cases.items() if "tyche_ngpu8_ngc25.09_nemo 8B" in label)
    assert small.model is not None and small.model.vocab_size == 128256  # the 8B keeps its tokenizer
    assert small.plan is not None and (small.plan.tp, small.plan.dp, small.plan.micro_batch) == (1, 8, 2)
    assert small.plan.precision == "fp4" and not small.plan.sp


def test_the_throughput_agrees_with_the_logged_step_times() -> None:
    """NeMo's callbacks log every step's time (MLLOG ``tracked_stats`` ``train_step_time``); GBS x
    8192 / (its median x chips) is the same throughput measured without the run-level arithmetic
    (the evaluation subtraction, warm-up, the 1/3 charge). They agree within 1-2 % on most rows;
    Cisco's 128-GPU runs lose 11 % outside their median steps."""
    ratios = []
    for row in _rows():
        if not row["train_step_time_s_median"]:
            continue
        logged = (int(row["global_batch_size_seqs"]) * 8192
                  / (float(row["train_step_time_s_median"]) * int(row["n_accelerators"])))
        ratios.append(tokens_per_s_per_chip(row) / logged)
    assert len(ratios) >= 50
    assert all(0.88 < r < 1.01 for r in ratios)
    assert sum(abs(r - 1.0) < 0.03 for r in ratios) >= 0.9 * len(ratios)
