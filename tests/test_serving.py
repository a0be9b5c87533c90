"""Serving capacity planning and ``clusterplan serve`` (issue #7)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.inference.capacity import Slo, serve_record
from clusterplan.inference.step import Deployment

Cli = Callable[[list[str]], tuple[int, str, str]]

H100 = ["serve", "--model", "llama3-70b", "--system", "dgx-h100", "--tp", "8", "--weights", "fp8",
        "--kv-cache", "fp8", "--requests", "600"]


def record(**kwargs: object) -> dict[str, object]:
    return serve_record(load_model("llama3-70b"), hardware_for(load_system("dgx-h100")),
                        Deployment(tp=8, weights="fp8", kv_cache="fp8"), 1000, 200, requests=600, **kwargs)  # type: ignore[arg-type]


def test_demand_needs_enough_replicas_and_prices_follow_from_chip_hours() -> None:
    out = record(slo=Slo(ttft_p99_s=2.0, tpot_p99_s=0.05), demand_output_tokens_per_s=1e6)
    slo, demand = out["slo"], out["demand"]
    assert isinstance(slo, dict) and isinstance(demand, dict)
    per_replica = slo["max_requests_per_s"] * 200
    assert demand["replicas"] == math.ceil(1e6 / per_replica)
    assert demand["chips"] == 8 * demand["replicas"]
    assert (demand["replicas"] - 1) * per_replica < 1e6 <= demand["replicas"] * per_replica
    # $/M output tokens = fleet $/hour / (output tokens per hour) * 1e6
    assert demand["usd_per_million_output_tokens"] == pytest.approx(
        demand["cost_per_hour_usd"] / (1e6 * 3600) * 1e6)
    assert demand["usd_per_million_total_tokens"] < demand["usd_per_million_output_tokens"]
    assert demand["power_w"]["facility_w"] > demand["power_w"]["it_w"] > 0


def test_a_tighter_slo_needs_at_least_as_many_chips() -> None:
    loose = record(slo=Slo(ttft_p99_s=5.0, tpot_p99_s=0.08), demand_output_tokens_per_s=2e5)
    tight = record(slo=Slo(ttft_p99_s=1.0, tpot_p99_s=0.03), demand_output_tokens_per_s=2e5)
    assert tight["demand"]["chips"] >= loose["demand"]["chips"]  # type: ignore[index]


def test_without_an_slo_the_fleet_is_sized_at_saturation() -> None:
    out = record(demand_output_tokens_per_s=1e5)
    saturated = out["saturated"]["output_tokens_per_s"]  # type: ignore[index]
    assert out["demand"]["replicas"] == math.ceil(1e5 / saturated)  # type: ignore[index]


def test_a_request_larger_than_the_kv_cache_is_refused() -> None:
    with pytest.raises(SpecError, match="KV cache"):
        serve_record(load_model("llama3-70b"), hardware_for(load_system("dgx-h100")),
                     Deployment(tp=2, weights="fp8", kv_cache="bf16"), 2_000_000, 10)


def test_serve_cli_json(cli_run: Cli) -> None:
    code, out, err = cli_run([*H100, "--rate", "5", "--demand", "200k", "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert data["simulated"]["ttft_p99_s"] >= data["simulated"]["ttft_p50_s"] > 0
    assert data["demand"]["output_tokens_per_s"] == 200_000


def test_serve_cli_table(cli_run: Cli) -> None:
    code, out, _ = cli_run([*H100, "--slo-ttft", "2000", "--slo-tpot", "60", "--demand", "1M"])
    assert code == 0
    assert "replicas / chips" in out and "per M output" in out


@pytest.mark.parametrize(("extra", "field"), [
    (["--tp", "3"], "--tp"),
    (["--weights", "int4"], "--weights"),
    (["--kv-cache", "fp4"], "--kv-cache"),
    (["--rate", "-1"], "--rate"),
    (["--slo-ttft", "100"], "--slo-tpot"),
    (["--slo-ttft", "0", "--slo-tpot", "10"], "--slo-ttft"),
    (["--demand", "lots"], "--demand"),
    (["--input-tokens", "0"], "--input-tokens"),
    (["--length-spread", "9"], "--length-spread"),
    (["--tp", "1", "--weights", "bf16"], "--tp"),
    (["--prefill-buckets", "4096,2048"], "--prefill-buckets"),
    (["--decode-buckets", "4k"], "--decode-buckets"),
])
def test_serve_refusals_are_one_line(cli_run: Cli, extra: list[str], field: str) -> None:
    code, out, err = cli_run([*H100, *extra])
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0], err


def test_serve_buckets_pad_a_single_request(cli_run: Cli) -> None:
    base = ["serve", "--model", "llama3-70b", "--system", "trn2", "--tp", "16", "--input-tokens", "10000",
            "--output-tokens", "1500", "--json"]
    code, out, err = cli_run(base)
    assert code == 0, err
    plain = json.loads(out)["single_request"]
    code, out, err = cli_run([*base, "--prefill-buckets", "2048,4096,8192,12288", "--decode-buckets", "12800"])
    assert code == 0, err
    padded = json.loads(out)["single_request"]
    assert padded["ttft_s"] > 1.15 * plain["ttft_s"]  # 12,288 tokens prefilled, not 10,000
    assert padded["tpot_s"] > plain["tpot_s"]


def test_closed_loop_and_offline_runs(cli_run: Cli) -> None:
    base = ["serve", "--model", "llama3-8b", "--system", "dgx-h100", "--weights", "fp8", "--requests", "300", "--json"]
    code, out, err = cli_run([*base, "--batch", "16", "--slo-ttft", "500", "--slo-tpot", "50"])
    assert code == 0, err
    loop = json.loads(out)["replay"]
    assert 0.0 <= loop["slo_attainment"] <= 1.0
    assert loop["mean_batch"] <= 16 + 1e-9
    code, out, err = cli_run([*base, "--offline"])
    assert code == 0, err
    saturated = json.loads(out)
    # all queued at t=0: the simulated rate approaches the analytic steady state (ramp-down included)
    assert 0.5 < saturated["replay"]["output_tokens_per_s"] / saturated["saturated"]["output_tokens_per_s"] < 1.2
    assert saturated["replay"]["total_tokens_per_s"] > saturated["replay"]["output_tokens_per_s"]


def test_only_one_way_to_simulate(cli_run: Cli) -> None:
    code, out, err = cli_run([*H100, "--offline", "--batch", "4"])
    assert code == 2 and out == "" and "at most one" in err


@pytest.mark.parametrize(("extra", "field"), [
    (["--prefill-replicas", "2"], "--prefill-replicas"),
    (["--decode-replicas", "2", "--scheduler", "chunked"], "--decode-replicas"),
    (["--replicas", "0"], "--replicas"),
    (["--scheduler", "fifo"], "--scheduler"),
    (["--router", "random"], "--router"),
    (["--admission", "greedy"], "--admission"),
    (["--scheduler", "disaggregated", "--replicas", "2"], "--replicas"),
    (["--scheduler", "disaggregated", "--prefill-replicas", "0"], "--prefill-replicas"),
    (["--max-num-tokens", "0"], "--max-num-tokens"),
    (["--scheduler", "static", "--max-num-tokens", "512"], "--max-num-tokens"),
])
def test_serve_scheduler_refusals_are_one_line(cli_run: Cli, extra: list[str], field: str) -> None:
    code, out, err = cli_run([*H100, "--rate", "5", *extra])
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0], err


def test_serve_default_run_is_unchanged_by_the_new_keys(cli_run: Cli) -> None:
    code, out, err = cli_run([*H100, "--rate", "5", "--json"])
    assert code == 0, err
    run = json.loads(out)["simulated"]
    assert "simulation" not in json.loads(out)  # default scheduler: nothing to report
    assert run["throughput_output_tokens_per_s"] == run["output_tokens_per_s"]
    assert run["ttft_s"]["p99"] == run["ttft_p99_s"] and run["tpot_s"]["p50"] == run["tpot_p50_s"]
    assert run["preemptions"] == 0 and run["scheduler"] == "chunked"
    kv = run["kv_utilisation"]
    assert 0 < kv["mean"] <= kv["peak"] <= 1 and len(kv["series"]["value"]) == len(kv["series"]["time_s"]) == 200
    assert run["goodput_requests_per_s"] == pytest.approx(run["requests_per_s"])  # no SLO: every request


def test_serve_takes_the_engines_token_budget(cli_run: Cli) -> None:
    """``--max-num-tokens`` is the chunked step budget (decodes included) or the continuous
    scheduler's prefill-step cap; a small budget paces the prompts, so TTFT grows."""
    runs = {}
    for scheduler, budget in (("chunked", None), ("chunked", 256), ("continuous", 256)):
        args = [*H100, "--rate", "5", "--json", "--scheduler", scheduler]
        code, out, err = cli_run(args + ([] if budget is None else ["--max-num-tokens", str(budget)]))
        assert code == 0, err
        runs[scheduler, budget] = json.loads(out)
    assert runs["chunked", 256]["simulation"]["chunk_tokens"] == 256
    assert runs["continuous", 256]["simulation"]["max_prefill_tokens"] == 256
    assert (runs["chunked", 256]["simulated"]["ttft_s"]["p50"]
            > runs["chunked", None]["simulated"]["ttft_s"]["p50"])


def test_serve_fleet_and_disaggregated_runs(cli_run: Cli) -> None:
    code, out, err = cli_run([*H100, "--rate", "40", "--replicas", "2", "--router", "least-loaded",
                              "--slo-ttft", "2000", "--slo-tpot", "60", "--json"])
    assert code == 0, err
    data = json.loads(out)
    assert data["simulation"] == {"replicas": 2, "router": "least_loaded", "replicas_per_unit": 2}
    assert data["simulated"]["replicas"] == 2 and 0.0 <= data["simulated"]["slo_attainment"] <= 1.0
    assert data["slo"]["max_requests_per_s"] > data["saturated"]["requests_per_s"]  # two replicas
    code, out, err = cli_run([*H100, "--rate", "10", "--scheduler", "disaggregated", "--prefill-replicas", "1",
                              "--decode-replicas", "2", "--json"])
    assert code == 0, err
    run = json.loads(out)["simulated"]
    assert run["scheduler"] == "disaggregated" and 0 < run["prefill_busy_fraction"] < 1
    code, out, err = cli_run([*H100, "--offline", "--scheduler", "static", "--admission", "optimistic"])
    assert code == 0, err
    assert "KV use mean / peak" in out and "goodput" in out
