"""The MLPerf Inference table (mlperf_inference.csv): loads, every row sourced, skips explained."""

from __future__ import annotations

import pytest

from clusterplan.catalog import load_efficiency
from clusterplan.validation.inference_cases import (
    INFERENCE_TABLES,
    _mlperf_output_tokens,
    _mlperf_rows,
    mlperf_inference,
    mlperf_server_requests,
)

#: Latency limits of the llama2-70b and mixtral-8x7b scenarios (MLPerf Inference rules; each row's
#: own mlperf_log_summary.txt prints them as ttft_latency / tpot_latency).
LIMITS_MS = {"offline": ("2000", "200"), "server": ("2000", "200"), "interactive": ("450", "40")}

#: Each benchmark's range of a run's mean output (tokens/s over samples/s). llama2-70b: OpenOrca
#: answers, the reference's fp16 run averages 294.45 tokens per sample. mixtral-8x7b: 145.9 per
#: sample, the reference the MLCommons submission checker bounds at x1.1
#: (tools/submission/submission_checker/constants.py, ``TOKENS_PER_SAMPLE``); +-10 % here.
OUTPUT_TOKENS = {"llama2-70b": (250, 320), "mixtral-8x7b": (131, 161)}


def test_table_is_registered_and_joins_the_serving_fit() -> None:
    from clusterplan.validation.calibrate import INFERENCE_TABLES as SERVING_STAGE

    assert "mlperf_inference" in INFERENCE_TABLES
    assert "mlperf_inference" in SERVING_STAGE


def test_every_row_has_a_source_and_the_published_numbers() -> None:
    rows = _mlperf_rows()
    assert len(rows) >= 15
    for row in rows:
        assert row["source"].startswith("github.com/mlcommons/inference_results_v"), row["row_id"]
        assert row["source"].endswith("mlperf_log_summary.txt"), row["row_id"]
        assert float(row["result_tokens_per_s"]) > 0 and float(row["result_samples_per_s"]) > 0
        assert (row["ttft_p99_limit_ms"], row["tpot_p99_limit_ms"]) == LIMITS_MS[row["scenario"]], row["row_id"]
        low, high = OUTPUT_TOKENS[row["model"]]
        assert low <= _mlperf_output_tokens(row) <= high, row["row_id"]


def test_cases_build_and_skips_have_reasons() -> None:
    cases = mlperf_inference()
    assert len(cases) == len(_mlperf_rows())
    modelled = [c for c in cases if c.skip is None]
    assert {c.family for c in modelled} >= {"hopper", "blackwell", "cdna3"}
    for case in cases:
        assert case.source
        if case.skip is not None:
            assert len(case.skip) > 10 and case.predict is None
        else:
            assert case.predict is not None and case.assumptions


def test_offline_rows_predict_a_positive_throughput() -> None:
    for case in mlperf_inference():
        if case.skip is None and "offline" in case.label:
            assert case.predict is not None
            predicted = case.predict(load_efficiency(case.family))
            # A sanity bound: the MI300X Offline row over-predicts by 59 % (prompt 222 tokens, the
            # cdna3 serving fit at its bounds), the NVIDIA rows by -4 to +13 %.
            assert predicted == pytest.approx(case.published, rel=0.75), case.label


def test_server_runs_are_longer_than_the_batch() -> None:
    assert mlperf_server_requests(2048) == 12_288
    assert mlperf_server_requests(100) == 3_000
    assert mlperf_server_requests(806) >= 6 * 806


def test_prompt_length_is_the_sourced_mean() -> None:
    from clusterplan.validation.inference_cases import MLPERF_LLAMA2_INPUT_TOKENS

    # tok_input_length summed over the 24,576 rows (HBFSim's length contract; docs/validation.md)
    assert MLPERF_LLAMA2_INPUT_TOKENS == round(5_463_976 / 24_576) == 222


def test_mixtral_rows_are_modelled_at_their_own_mean_prompt() -> None:
    from clusterplan.validation.inference_cases import MLPERF_INPUT_TOKENS, MLPERF_MIXTRAL_INPUT_TOKENS

    # tok_input_len summed over the 15,000 rows (performance-dashboard's summary; docs/validation.md)
    assert MLPERF_MIXTRAL_INPUT_TOKENS == round(6_410_905 / 15_000) == 427
    assert MLPERF_INPUT_TOKENS == {"llama2-70b": 222, "mixtral-8x7b": 427}
    ids = {row["row_id"] for row in _mlperf_rows() if row["model"] == "mixtral-8x7b"}
    assert len(ids) >= 10
    cases = {case.label.split()[0]: case for case in mlperf_inference()}
    for row_id in ids:
        case = cases[row_id]
        assert "mixtral-8x7b" in case.label
        assert case.skip is None and case.predict is not None, case.label
        assert case.assumptions[0].startswith("mean prompt 427 tokens"), case.label
    llama2 = [c for c in cases.values() if c.skip is None and "mixtral" not in c.label]
    assert llama2 and all(c.assumptions[0].startswith("mean prompt 222 tokens") for c in llama2)
    assert {cases[i].family for i in ids} == {"hopper", "cdna3"}
