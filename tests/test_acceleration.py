"""Speculative decoding and prefix caching (inference/acceleration.py), through the API, the
simulator and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cliutil import run_cli
from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.inference.acceleration import (
    ServingReplica,
    Speculation,
    expected_tokens,
    parse_speculation,
    serving_replica,
)
from clusterplan.inference.capacity import serve_record
from clusterplan.inference.serving import simulate
from clusterplan.inference.step import Deployment, ReplicaModel
from clusterplan.inference.workload import Workload, closed_loop
from test_output_width import assert_readable, invoke

MODEL = load_model("llama3-70b", "--model")
DRAFT = load_model("llama3.2-1b", "--speculative")
HARDWARE = hardware_for(load_system("dgx-h100", "--system"), None)
DEPLOYMENT = Deployment(tp=8, weights="fp8", kv_cache="fp8")
SERVE = ["serve", "--model", "llama3-70b", "--system", "dgx-h100", "--tp", "8", "--weights", "fp8",
         "--kv-cache", "fp8"]
SPECS = {
    "draft": "draft=llama3.2-1b,tokens=4,acceptance={a}",
    "mtp": "draft=mtp,tokens=1,acceptance={a}",
    "eagle": "draft=eagle,tokens=5,acceptance={a}",
}


def replica(text: str, prefix_cache_hit: float = 0.0) -> ServingReplica:
    spec = parse_speculation(text)
    built = serving_replica(MODEL, HARDWARE, DEPLOYMENT, speculation=spec,
                            draft_model=DRAFT if spec.method == "draft" else None, prefix_cache_hit=prefix_cache_hit)
    assert isinstance(built, ServingReplica)
    return built


def test_expected_tokens_per_iteration_is_leviathans_formula() -> None:
    assert expected_tokens(0.0, 4) == 1.0
    assert expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.8, 4) == pytest.approx(1 + 0.8 + 0.8**2 + 0.8**3 + 0.8**4, rel=1e-12)
    assert np.allclose(expected_tokens(np.array([0.5, 0.9]), 2), [1.75, 2.71])


@pytest.mark.parametrize("method", sorted(SPECS))
def test_batch_one_tpot_falls_by_the_expected_tokens_of_its_acceptance(method: str) -> None:
    base = ReplicaModel(MODEL, HARDWARE, DEPLOYMENT)
    context = 1100
    low, high = replica(SPECS[method].format(a=0.6)), replica(SPECS[method].format(a=0.9))
    k = low.speculation.tokens if low.speculation else 0
    # the iteration costs the same at any acceptance: TPOT scales as 1 / expected tokens exactly
    assert low.iteration_time(1, context) == high.iteration_time(1, context)
    ratio = high.decode_time(1, context) / low.decode_time(1, context)
    assert ratio == pytest.approx(expected_tokens(0.6, k) / expected_tokens(0.9, k), rel=1e-12)
    # the iteration: K draft decode steps and one verify step of K + 1 tokens
    assert high.draft is not None
    verify = high.iteration_time(1, context) - k * high.draft.decode_time(1, context)
    assert verify >= base.decode_time(1, context)  # K + 1 tokens cost at least one
    assert verify < 1.2 * base.decode_time(1, context)  # batch 1 is weight-read bound
    assert high.decode_time(1, context) < base.decode_time(1, context)  # a good draft helps at batch 1
    # the simulator's TPOT carries the same factor (same context trajectory at both acceptances)
    load = closed_loop(1, 3, 1000, 200)
    tpot = [float(np.mean(simulate(r, load).tpot_s)) for r in (low, high)]
    assert tpot[1] / tpot[0] == pytest.approx(ratio, rel=1e-9)


def test_acceptance_zero_is_slower_than_no_speculation() -> None:
    plain = serve_record(MODEL, HARDWARE, DEPLOYMENT, 1000, 200)
    for method, text in SPECS.items():
        spec = parse_speculation(text.format(a=0.0))
        record = serve_record(MODEL, HARDWARE, DEPLOYMENT, 1000, 200, speculation=spec,
                              draft_model=DRAFT if method == "draft" else None)
        assert record["single_request"]["tpot_s"] > plain["single_request"]["tpot_s"], method
        assert record["saturated"]["output_tokens_per_s"] < plain["saturated"]["output_tokens_per_s"], method
        assert record["speculation"]["expected_tokens_per_iteration"] == 1.0


def test_the_draft_takes_memory_from_the_kv_cache() -> None:
    base = ReplicaModel(MODEL, HARDWARE, DEPLOYMENT)
    spec = replica(SPECS["draft"].format(a=0.7))
    assert spec.draft is not None
    # the 1B draft's weights at fp8 (blocks) and bf16 (tied embedding), TP8 (gcd of 8 and 32 heads)
    assert spec.draft_weight_bytes_per_chip == pytest.approx(
        (DRAFT.total_params - DRAFT.embedding_params - DRAFT.lm_head_params) / 8
        + 2 * (DRAFT.embedding_params + DRAFT.lm_head_params) / 8, rel=1e-12)
    free = (HARDWARE.chip.hbm_bytes - base.weight_bytes_per_chip - spec.draft_weight_bytes_per_chip
            - HARDWARE.efficiency.reserved_bytes) * DEPLOYMENT.kv_memory_fraction
    per_token = base.kv_per_token / 8 + spec.draft.kv_per_token / 8  # 8 KV heads each, split by TP8
    assert spec.kv_capacity_tokens == int(free / per_token) < base.kv_capacity_tokens
    eagle = replica(SPECS["eagle"].format(a=0.7))
    assert eagle.draft is not None and eagle.draft.model.layers == 1
    assert eagle.kv_capacity_tokens > spec.kv_capacity_tokens  # one layer's KV, not a 16-layer draft's


@pytest.mark.parametrize("text, rule", [
    ("draft=llama3.2-1b,tokens=0,acceptance=0.8", "tokens must be 1 to 16"),
    ("draft=mtp,tokens=3", "lacks acceptance"),
    ("draft=eagle,tokens=3,acceptance=1.5", "acceptance must be a probability"),
    ("draft=eagle,tokens=3,acceptance=nan", "acceptance must be a probability"),
    ("draft=mtp,tokens=two,acceptance=0.5", "tokens must be a whole number"),
    ("eagle,tokens=3,acceptance=0.5", "must be draft=MODEL|mtp|eagle"),
    ("draft=no-such-model,tokens=3,acceptance=0.5", "unknown model"),
    ("draft=mixtral-8x22b,tokens=3,acceptance=0.5", "vocabulary"),
])
def test_bad_speculation_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], text: str, rule: str) -> None:
    code, out, err = run_cli(capsys, [*SERVE, "--speculative", text])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--speculative" in err and rule in err, err


def test_speculation_with_pipeline_parallelism_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, ["serve", "--model", "llama3-70b", "--system", "dgx-h100", "--tp", "4", "--pp",
                                    "2", "--speculative", "draft=eagle,tokens=3,acceptance=0.6"])
    assert code == 2 and "needs --pp 1" in err and len(err.strip().splitlines()) == 1


def test_the_draft_is_named_only_for_a_draft_model() -> None:
    with pytest.raises(ValueError):
        Speculation(method="mtp", draft="llama3.2-1b", tokens=2, acceptance=0.5)
    with pytest.raises(SpecError):
        parse_speculation("draft=mtp,tokens=2,acceptance=0.5,tokens=3")


# ---- prefix caching -------------------------------------------------------------------------
def test_prefix_cache_ttft_is_the_prefill_of_the_uncached_tokens() -> None:
    plain = ReplicaModel(MODEL, HARDWARE, DEPLOYMENT)
    cached = serving_replica(MODEL, HARDWARE, DEPLOYMENT, prefix_cache_hit=0.75)
    prompt, hit = 4000, 3000
    latency = plain.request_latency_s
    want = plain.prefill_time(prompt - hit, hit) + latency
    assert cached.single_request_ttft(prompt) == pytest.approx(want, rel=1e-12)
    # the analytic ratio: prefill of 1000 tokens over a 3000-token context against the whole prompt
    ratio = (cached.single_request_ttft(prompt) - latency) / (plain.single_request_ttft(prompt) - latency)
    assert ratio == pytest.approx(plain.prefill_time(1000, 3000) / plain.prefill_time(4000, 0), rel=1e-12)
    assert 0.25 <= ratio < 0.5  # less than the whole prefill; attention over the prefix still costs
    # every scheduler's simulated TTFT of a lone request is that prefill (plus the request latency)
    load = closed_loop(1, 2, prompt, 20)
    for scheduler in ("chunked", "continuous", "static"):
        ttft = simulate(cached, load, scheduler).ttft_s
        assert np.allclose(ttft, want, rtol=1e-9), scheduler
    disaggregated = simulate(cached, Workload.from_requests([(0.0, prompt, 20)]), "disaggregated")
    assert disaggregated.ttft_s[0] == pytest.approx(want + plain.kv_transfer_time(prompt), rel=1e-9)


def test_prefix_cache_raises_prefill_heavy_throughput_and_keeps_kv_per_request() -> None:
    plain = serve_record(MODEL, HARDWARE, DEPLOYMENT, 2000, 100)
    cached = serve_record(MODEL, HARDWARE, DEPLOYMENT, 2000, 100, prefix_cache_hit=0.5)
    assert cached["kv_capacity_tokens"] == plain["kv_capacity_tokens"]
    assert cached["saturated"]["output_tokens_per_s"] > 1.3 * plain["saturated"]["output_tokens_per_s"]
    assert cached["single_request"]["ttft_s"] < plain["single_request"]["ttft_s"]
    assert cached["single_request"]["tpot_s"] == plain["single_request"]["tpot_s"]
    assert cached["prefix_cache"] == {"hit_fraction": 0.5, "kv_accounting": "per request"}


def test_no_prefix_cache_is_todays_output_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*SERVE, "--rate", "20", "--requests", "300", "--json"]
    code, today, _ = run_cli(capsys, argv)
    assert code == 0
    code, zero, _ = run_cli(capsys, [*argv, "--prefix-cache-hit", "0"])
    assert code == 0 and zero == today
    for scheduler in ("continuous", "static"):
        code, a, _ = run_cli(capsys, [*argv, "--scheduler", scheduler])
        code2, b, _ = run_cli(capsys, [*argv, "--scheduler", scheduler, "--prefix-cache-hit", "0.0"])
        assert code == code2 == 0 and a == b
    assert "prefix_cache" not in json.loads(today)


@pytest.mark.parametrize("value", ["-0.1", "1", "1.5", "nan"])
def test_bad_prefix_cache_hit_is_refused(capsys: pytest.CaptureFixture[str], value: str) -> None:
    code, out, err = run_cli(capsys, [*SERVE, "--prefix-cache-hit", value])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--prefix-cache-hit" in err and "0 <= F < 1" in err, err


def test_serve_with_both_fits_80_columns_and_reports_si_fields() -> None:
    argv = [*SERVE, "--speculative", "draft=llama3.2-1b,tokens=4,acceptance=0.8", "--prefix-cache-hit", "0.5",
            "--rate", "5", "--requests", "200"]
    assert_readable(invoke(argv))
    record = json.loads(invoke([*argv, "--json"]))
    spec = record["speculation"]
    assert spec["expected_tokens_per_iteration"] == pytest.approx(expected_tokens(0.8, 4))
    assert spec["draft_weight_bytes_per_chip"] > 0 and spec["draft_kv_bytes_per_token"] > 0
    assert math.isfinite(record["simulated"]["tpot_p50_s"])


# ---- validation: the speculative rows of inference_published.csv ----------------------------
def test_speculative_rows_model_the_ttft_and_list_the_tpot_without_an_acceptance() -> None:
    from clusterplan.catalog import load_efficiency
    from clusterplan.validation import inference_cases as ic

    rows = {row["row_id"]: row for row in ic._rows()}
    cases = {case.label.split()[0] + " " + case.metric: case for case in ic.inference_latency()}
    ttft, tpot = cases["S0113 ttft_s"], cases["S0113 tpot_s"]
    assert ttft.skip is None and "no acceptance rate enters it" in " ".join(ttft.assumptions)
    assert tpot.skip is not None and "no published acceptance rate" in tpot.skip
    assert "mixed weight/compute" in (cases["S0117 ttft_s"].skip or "")
    assert "superseded" in (cases["S0115 ttft_s"].skip or "")
    efficiency = load_efficiency(ic._family(rows["S0113"]))
    speculative, baseline = ic._replica(rows["S0113"], efficiency), ic._replica(rows["S0112"], efficiency)
    assert isinstance(speculative, ServingReplica) and speculative.draft is not None
    assert speculative.deployment.prefill_buckets == baseline.deployment.prefill_buckets  # "same as baseline"
    assert speculative.draft.model.name == "llama3.2-1b" and speculative.speculation is not None
    assert speculative.speculation.tokens == 7
    # TTFT = the baseline's prefill plus the draft's (padded to the same bucket); no acceptance in it
    want = baseline.single_request_ttft(10000) + speculative.draft.prefill_time(10000, 0)
    assert speculative.single_request_ttft(10000) == pytest.approx(want, rel=1e-12)
    other = ServingReplica(speculative.model, speculative.hardware, speculative.deployment,
                           speculation=speculative.speculation.model_copy(update={"acceptance": 0.9}),
                           draft_model=speculative.draft_model)
    assert other.single_request_ttft(10000) == speculative.single_request_ttft(10000)


# ---- the --deployment file (issue #17 leftovers) --------------------------------------------------
def test_a_deployment_file_holds_speculation_and_prefix_caching(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    line = [*SERVE, "--speculative", "draft=eagle,tokens=3,acceptance=0.7", "--prefix-cache-hit", "0.5", "--json"]
    code, by_options, _ = run_cli(capsys, line)
    assert code == 0
    for text in ("speculative: draft=eagle,tokens=3,acceptance=0.7\n",
                 "speculative:\n  draft: eagle\n  tokens: 3\n  acceptance: 0.7\n"):
        path = tmp_path / "deploy.yaml"
        path.write_text(text + "prefix_cache_hit: 0.5\n")
        code, by_file, _ = run_cli(capsys, [*SERVE, "--deployment", str(path), "--json"])
        assert code == 0 and by_file == by_options
    # the options on the line override the file
    code, override, _ = run_cli(capsys, [*SERVE, "--deployment", str(path), "--prefix-cache-hit", "0", "--json"])
    assert code == 0 and "prefix_cache" not in json.loads(override) and "speculation" in json.loads(override)


@pytest.mark.parametrize(("text", "field"), [("prefix_cache_hit: 1.5\n", "deploy.yaml:prefix_cache_hit"),
                                             ("speculative: eagle\n", "deploy.yaml:speculative"),
                                             ("speculativ: eagle\n", "deploy.yaml:speculativ")])
def test_a_bad_serving_key_in_a_deployment_file_is_refused_under_its_name(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(text)
    code, out, err = run_cli(capsys, [*SERVE, "--deployment", str(path)])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and field in err, err
