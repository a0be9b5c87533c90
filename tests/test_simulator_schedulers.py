"""Serving simulator schedulers (ported from branch serving-schedulers): hand-computable cases on toy
step models with constant or linear step times, scheduler orderings, KV admission and preemption,
closed loop, goodput, fleets, trace files, and a per-token reference simulator."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clusterplan.errors import SpecError
from clusterplan.inference import workload as wl
from clusterplan.inference.serving import ServingResult, simulate
from clusterplan.inference.workload import Workload

P, D, M, X = 0.1, 0.01, 0.03, 0.05  # prefill, decode, mixed step and KV transfer times of the toy (s)


@dataclass
class Const:
    """Every step of a kind takes the same time, whatever its size."""

    kv_capacity_tokens: int = 1_000_000
    max_batch: int = 256
    prefill: float = P
    decode: float = D
    mixed: float = M
    transfer: float = X

    def prefill_time(self, tokens: int, context: int) -> float:
        return self.prefill

    def decode_time(self, batch: int, total_context: int) -> float:
        return self.decode

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        return self.mixed

    def kv_transfer_time(self, tokens: int) -> float:
        return self.transfer


@dataclass
class Linear:
    """Step times linear in tokens and batch (a mixed step costs its decode plus its prefill tokens)."""

    kv_capacity_tokens: int = 400_000
    max_batch: int = 64

    def prefill_time(self, tokens: int, context: int) -> float:
        return 0.005 + 1e-4 * tokens

    def decode_time(self, batch: int, total_context: int) -> float:
        return 0.02 + 1e-4 * batch + 1e-9 * total_context

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        return self.decode_time(batch, total_context) + 1e-4 * prefill_tokens

    def kv_transfer_time(self, tokens: int) -> float:
        return 1e-5 * tokens


def requests(*rows: tuple[float, int, int]) -> Workload:
    return Workload.from_requests(list(rows))


def summ(result: ServingResult, slo_ttft_s: float | None = None, slo_tpot_s: float | None = None) -> dict[str, float]:
    """The run's record flattened: ``ttft_s_p99``, ``kv_utilisation_max``, ``steps`` ..."""
    record = result.record(slo_ttft_s, slo_tpot_s)
    flat: dict[str, float] = {}
    for key, value in record.items():
        if key in ("ttft_s", "tpot_s", "e2e_s"):
            flat.update({f"{key}_{q}": v for q, v in value.items()})
        elif key == "kv_utilisation":
            flat["kv_utilisation_mean"], flat["kv_utilisation_max"] = value["mean"], value["peak"]
        elif isinstance(value, int | float):
            flat[key] = value
    return flat


def in_system_max(result: ServingResult) -> int:
    """Most requests issued and not finished at once (from the per-request times)."""
    n = len(result.arrival_s)
    times = np.concatenate([result.arrival_s, result.finish_s])
    steps = np.concatenate([np.ones(n), -np.ones(n)])
    order = np.lexsort((steps, times))  # at equal times, completions (-1) before arrivals
    return int(np.cumsum(steps[order]).max())


# ---------------------------------------------------------------------------------------------- one request


@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked"])
def test_one_request_ttft_is_the_prefill_and_tpot_the_decode_step(scheduler: str) -> None:
    result = simulate(Const(), requests((1.0, 100, 11)), scheduler)
    assert result.ttft_s[0] == pytest.approx(P)
    assert result.tpot_s[0] == pytest.approx(D)
    assert result.e2e_s[0] == pytest.approx(P + 10 * D)
    assert result.first_token_s[0] == pytest.approx(1.0 + P)
    assert result.iterations == 11


@dataclass
class WithLatency(Const):
    request_latency_s: float = 0.007


@pytest.mark.parametrize("scheduler", ["chunked", "continuous", "static", "disaggregated"])
def test_request_latency_adds_to_ttft_and_e2e_not_to_tpot_or_the_engine(scheduler: str) -> None:
    plain = simulate(Const(), requests((1.0, 100, 11), (1.05, 100, 11)), scheduler)
    late = simulate(WithLatency(), requests((1.0, 100, 11), (1.05, 100, 11)), scheduler)
    assert late.ttft_s == pytest.approx(plain.ttft_s + 0.007)
    assert late.e2e_s == pytest.approx(plain.e2e_s + 0.007)
    assert late.tpot_s == pytest.approx(plain.tpot_s)
    assert late.finish_s == pytest.approx(plain.finish_s)  # outside the engine: its steps are unchanged


def test_one_token_output_has_no_tpot_and_ends_at_its_first_token() -> None:
    result = simulate(Const(), requests((0.0, 100, 1), (0.0, 100, 3)))
    assert np.isnan(result.tpot_s[0]) and result.finish_s[0] == pytest.approx(P)
    assert summ(result)["tpot_s_p50"] == pytest.approx(D)


def test_disaggregated_adds_the_kv_transfer_to_ttft() -> None:
    alone = simulate(Const(), requests((0.0, 100, 11)), "disaggregated")
    assert alone.ttft_s[0] == pytest.approx(P + X)
    assert alone.tpot_s[0] == pytest.approx(D)
    assert alone.e2e_s[0] == pytest.approx(P + X + 10 * D)


def test_prefill_step_stalls_decodes_and_chunking_does_not() -> None:
    # r0 decodes from t = 0.1; r1 arrives at 0.125 and is prefilled at the next step boundary, 0.13
    work = requests((0.0, 100, 11), (0.125, 100, 11))
    cont = simulate(Const(), work, "continuous")
    assert cont.first_token_s[1] == pytest.approx(0.13 + P)  # a prefill step; r0 waits
    assert cont.finish_s[0] == pytest.approx(0.23 + 7 * D)  # 3 decodes, the stall, 7 more
    chunk = simulate(Const(), work, "chunked")
    assert chunk.first_token_s[1] == pytest.approx(0.13 + M)  # a mixed step decodes r0 as well
    assert chunk.finish_s[0] == pytest.approx(0.16 + 6 * D)
    assert chunk.finish_s[1] == pytest.approx(0.16 + 10 * D)


def test_long_prompt_is_prefilled_in_chunks() -> None:
    result = simulate(Const(), requests((0.0, 1000, 2)), "chunked", chunk_tokens=300)
    assert result.ttft_s[0] == pytest.approx(4 * P)  # 300 + 300 + 300 + 100 tokens
    assert result.iterations == 5


def test_decodes_count_in_the_step_budget() -> None:
    """Sarathi-Serve's, vLLM V1's and TensorRT-LLM's budget: each decoding sequence takes one
    token of it. r0 decodes from 0.1 (its 40-token prompt is one step); r1's 400-token prompt
    then gets 100 - 1 = 99 tokens a step: 5 mixed steps (99 x 4 + 4), not 4 of 100."""
    work = requests((0.0, 40, 20), (0.1, 400, 2))
    result = simulate(Const(), work, "chunked", chunk_tokens=100)
    assert result.first_token_s[1] == pytest.approx(P + 5 * M)
    # Decodes that take the whole budget leave nothing for prompts until they end: r0 and r1
    # (one-token prompts, one prefill step) decode 5 steps at 2 tokens of a 2-token budget, so r2,
    # arrived during them, is prefilled alone after both finish.
    work = requests((0.0, 1, 6), (0.0, 1, 6), (0.15, 1, 2))
    result = simulate(Const(), work, "chunked", chunk_tokens=2)
    assert result.finish_s[0] == result.finish_s[1] == pytest.approx(P + 5 * D)
    assert result.first_token_s[2] == pytest.approx(2 * P + 5 * D)


# ---------------------------------------------------------------------------------------------- batches


def test_offline_batch_throughput_is_batch_times_output_over_total_time() -> None:
    batch, output = 32, 50
    result = simulate(Const(), wl.offline(batch, 200, output))
    total = P + (output - 1) * D  # one prefill step of every prompt, then output - 1 decode steps
    assert result.span_s == pytest.approx(total)
    assert summ(result)["throughput_output_tokens_per_s"] == pytest.approx(batch * output / total)
    assert summ(result)["throughput_total_tokens_per_s"] == pytest.approx(batch * (200 + output) / total)
    assert summ(result)["max_concurrent_sequences"] == batch
    assert np.allclose(result.ttft_s, P) and np.allclose(result.tpot_s, D)


def test_max_batch_splits_an_offline_run_into_waves() -> None:
    result = simulate(Const(), wl.offline(20, 100, 11), max_batch=8)
    wave = P + 10 * D  # a wave of 8 lasts one prefill and 10 decode steps; the next starts at its end
    assert result.ttft_s.tolist() == pytest.approx([P] * 8 + [wave + P] * 8 + [2 * wave + P] * 4)
    assert summ(result)["max_concurrent_sequences"] == 8


def test_continuous_beats_static_on_mixed_lengths() -> None:
    outputs = np.tile([10, 200], 32)
    work = Workload(np.zeros(64), np.full(64, 100), outputs)
    static = simulate(Linear(), work, "static", max_batch=16)
    cont = simulate(Linear(), work, "continuous", max_batch=16)
    assert summ(cont)["throughput_output_tokens_per_s"] > 1.3 * summ(static)["throughput_output_tokens_per_s"]
    assert summ(cont)["e2e_s_mean"] < summ(static)["e2e_s_mean"]
    assert summ(cont)["ttft_s_p50"] < summ(static)["ttft_s_p50"]


def test_static_batch_waits_to_fill_up_to_its_timeout() -> None:
    work = requests((0.0, 10, 2), (1.0, 10, 2), (2.0, 10, 2), (3.0, 10, 2))
    full = simulate(Const(), work, "static", max_batch=4, batch_timeout_s=10.0)
    assert full.first_token_s.tolist() == pytest.approx([3.0 + P] * 4)  # dispatched once full
    early = simulate(Const(), work, "static", max_batch=4, batch_timeout_s=1.5)
    assert early.first_token_s[:2].tolist() == pytest.approx([1.5 + P] * 2)  # timeout of the oldest
    eager = simulate(Const(), work, "static", max_batch=4)  # no timeout: whatever waits, when idle
    assert eager.ttft_s.tolist() == pytest.approx([P] * 4)


# ---------------------------------------------------------------------------------------------- KV cache


def test_kv_capacity_limits_admission_and_concurrency() -> None:
    model = Const(kv_capacity_tokens=3 * 110)  # three sequences of 100 + 10 tokens
    result = simulate(model, wl.offline(12, 100, 10))
    assert summ(result)["max_concurrent_sequences"] == 3
    assert in_system_max(result) == 12 and summ(result)["preemptions"] == 0
    assert result.span_s == pytest.approx(4 * (P + 9 * D))
    assert 0.9 < summ(result)["kv_utilisation_max"] <= 1.0


def test_static_batch_holds_padded_kv() -> None:
    work = requests((0.0, 100, 10), (0.0, 100, 50))  # two slots of 100 + 50 tokens when batched
    together = simulate(Const(kv_capacity_tokens=300), work, "static")
    assert summ(together)["max_concurrent_sequences"] == 2
    assert together.finish_s.tolist() == pytest.approx([P + 9 * D, P + 49 * D])  # tokens stream
    apart = simulate(Const(kv_capacity_tokens=299), work, "static")
    assert summ(apart)["max_concurrent_sequences"] == 1
    assert apart.first_token_s[1] == pytest.approx(P + 9 * D + P)


def test_request_the_kv_cannot_hold_is_refused() -> None:
    with pytest.raises(SpecError) as error:
        simulate(Const(kv_capacity_tokens=100), requests((0.0, 95, 10)))
    assert error.value.field == "input_tokens" and "can never be admitted" in error.value.rule


def test_optimistic_admission_preempts_and_every_request_completes() -> None:
    model = Linear(kv_capacity_tokens=4000, max_batch=64)
    work = wl.poisson(20, 300, 200, 300, seed=1, output_spread=0.5)
    for scheduler in ("continuous", "chunked"):
        result = simulate(model, work, scheduler, admission="optimistic")
        assert summ(result)["preemptions"] > 0
        assert np.all(np.isfinite(result.finish_s)) and np.all(result.finish_s >= result.first_token_s)
        assert summ(result)["kv_utilisation_max"] <= 1.0
        reserved = simulate(model, work, scheduler)  # no preemption when the whole output is reserved
        assert summ(reserved)["preemptions"] == 0
        assert summ(result)["max_concurrent_sequences"] > summ(reserved)["max_concurrent_sequences"]


def test_kv_utilisation_series_matches_its_mean() -> None:
    result = simulate(Linear(), wl.poisson(5, 500, 500, 100, seed=2), kv_series_points=50)
    assert result.kv_time_s.shape == result.kv_utilisation.shape == (50,)
    assert np.all((result.kv_utilisation >= 0) & (result.kv_utilisation <= 1))
    assert result.kv_utilisation.mean() == pytest.approx(summ(result)["kv_utilisation_mean"], rel=1e-9)
    assert summ(result)["kv_utilisation_mean"] > 0


# ---------------------------------------------------------------------------------------------- schedulers under load


def test_chunked_prefill_bounds_the_stalls_between_tokens() -> None:
    # Continuous batching stalls every decoding sequence for whole prefill steps (back to back while
    # prompts keep arriving); chunking caps a step at chunk_tokens of prefill. The toy's mixed step
    # costs its decode plus its prefill (no overlap), so chunking does not lower TTFT here.
    work = wl.poisson(4, 2000, 1000, 100, seed=3, output_spread=0.3)
    cont = summ(simulate(Linear(), work, "continuous"))
    chunk = summ(simulate(Linear(), work, "chunked", chunk_tokens=512))
    longest_mixed = Linear().mixed_time(512, 0, 64, 64 * 1100)
    assert chunk["tpot_s_p99"] <= longest_mixed
    assert chunk["tpot_s_p99"] < cont["tpot_s_p99"]
    assert chunk["tpot_s_p99"] - chunk["tpot_s_p50"] < cont["tpot_s_p99"] - cont["tpot_s_p50"]


def test_disaggregated_decode_is_free_of_prefill_stalls() -> None:
    work = wl.poisson(4, 1000, 1000, 100, seed=4)
    disagg = simulate(Linear(), work, "disaggregated")
    tpot = disagg.tpot_s
    assert tpot.max() < 1.3 * tpot.min()  # decode steps only: TPOT tracks the batch, not the prompts
    assert tpot.max() < Linear().decode_time(64, 64 * 1100)
    cont = simulate(Linear(), work, "continuous")
    assert summ(disagg)["tpot_s_p99"] < 0.5 * summ(cont)["tpot_s_p99"]
    assert 0 < summ(disagg)["prefill_busy_fraction"] < 1


def test_disaggregated_pools_scale() -> None:
    work = wl.offline(400, 1000, 50)
    one = simulate(Linear(), work, "disaggregated")
    two = simulate(Linear(), work, "disaggregated", prefill_replicas=2, decode_replicas=2, router="least_loaded")
    assert summ(two)["throughput_output_tokens_per_s"] > 1.7 * summ(one)["throughput_output_tokens_per_s"]
    assert set(two.replica.tolist()) == {0, 1}


def test_closed_loop_holds_its_concurrency() -> None:
    work = wl.closed_loop(8, 400, 300, 50, output_spread=0.5)
    for scheduler in ("continuous", "chunked", "static"):
        result = simulate(Linear(), work, scheduler)
        assert in_system_max(result) == 8
        assert summ(result)["max_concurrent_sequences"] == 8
        assert result.arrival_s[:8].tolist() == [0.0] * 8
        # each later request is issued exactly when an earlier one completes
        issued = np.sort(result.arrival_s[8:])
        assert np.allclose(issued, np.sort(result.finish_s)[: 400 - 8])
    cont = simulate(Linear(), work, "continuous")
    busy = float(cont.e2e_s.sum()) / cont.span_s  # Little's law: mean requests in the system
    assert 7.5 < busy <= 8.0  # 8 in flight except while the last ones drain


def test_open_loop_below_saturation_serves_the_offered_rate() -> None:
    for scheduler in ("continuous", "chunked", "static"):
        result = simulate(Linear(), wl.poisson(3, 3000, 800, 120, seed=5, input_spread=0.5), scheduler)
        assert summ(result)["requests_per_s"] == pytest.approx(3, rel=0.05)


def test_goodput_counts_the_requests_meeting_both_slos() -> None:
    # five sequences fit the KV at once: the second five wait for the first (P + 9 D) to finish
    result = simulate(Const(kv_capacity_tokens=5 * 110), wl.offline(10, 100, 10))
    s = summ(result, 0.15, 1.001 * D)
    assert result.ttft_s.tolist() == pytest.approx([P] * 5 + [2 * P + 9 * D] * 5)
    assert s["slo_attainment"] == pytest.approx(0.5)
    assert s["goodput_requests_per_s"] == pytest.approx(5 / result.span_s)
    assert s["goodput_output_tokens_per_s"] == pytest.approx(50 / result.span_s)
    assert summ(result, slo_tpot_s=D / 2)["slo_attainment"] == 0.0
    assert summ(result)["slo_attainment"] == 1.0
    assert result.goodput(0.15, 1.001 * D)["goodput_requests_per_s"] == s["goodput_requests_per_s"]


def test_fleet_of_four_serves_four_times_one_at_saturation() -> None:
    work = wl.offline(2000, 500, 100, output_spread=0.3)
    one = summ(simulate(Linear(), work))["throughput_output_tokens_per_s"]
    for router in ("round_robin", "least_loaded"):
        four = simulate(Linear(), work, replicas=4, router=router)
        assert summ(four)["throughput_output_tokens_per_s"] == pytest.approx(4 * one, rel=0.05)
        assert np.bincount(four.replica).tolist() == [500] * 4


def test_least_loaded_router_beats_round_robin_on_uneven_requests() -> None:
    outputs = np.where(np.arange(800) % 4 == 0, 400, 20)  # round robin sends every long one to replica 0
    work = Workload(np.cumsum(np.full(800, 0.05)), np.full(800, 200), outputs)
    rr = simulate(Linear(), work, replicas=4, router="round_robin")
    ll = simulate(Linear(), work, replicas=4, router="least_loaded")
    assert summ(ll)["e2e_s_p99"] < summ(rr)["e2e_s_p99"]
    assert np.bincount(rr.replica, weights=outputs)[0] == 200 * 400  # every long request


def test_record_has_the_serve_json_keys() -> None:
    record = simulate(Linear(), wl.poisson(2, 200, 300, 50)).record(1.0, 0.1)
    for key in ("throughput_output_tokens_per_s", "throughput_total_tokens_per_s", "slo_attainment",
                "max_concurrent_sequences", "goodput_requests_per_s", "preemptions", "ttft_p99_s", "mean_batch"):
        assert key in record
    assert set(record["kv_utilisation"]) == {"mean", "peak", "series"}
    assert len(record["kv_utilisation"]["series"]["value"]) == 200
    assert set(record["ttft_s"]) >= {"p50", "p90", "p99"} and set(record["tpot_s"]) >= {"p50", "p90", "p99"}
    json.dumps(record)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"scheduler": "fifo"}, "scheduler"), ({"router": "random"}, "router"),
    ({"admission": "greedy"}, "admission"), ({"replicas": 0}, "replicas"), ({"chunk_tokens": 0}, "chunk_tokens"),
    ({"batch_timeout_s": -1.0}, "batch_timeout_s"), ({"kv_series_points": 0}, "kv_series_points"),
    ({"scheduler": "disaggregated", "replicas": 2}, "replicas"), ({"max_prefill_tokens": 0}, "max_prefill_tokens"),
])
def test_bad_simulation_arguments_are_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as error:
        simulate(Const(), requests((0.0, 10, 10)), **kwargs)  # type: ignore[arg-type]
    assert error.value.field == field


# ---------------------------------------------------------------------------------------------- workloads


def test_poisson_and_bursty_rates_and_burstiness() -> None:
    poisson = wl.poisson(10, 20000, 500, 100, seed=1)
    bursty = wl.bursty(10, 20000, burst_factor=8, input_tokens=500, output_tokens=100, seed=1)
    for work in (poisson, bursty):
        assert len(work) / work.arrival_s[-1] == pytest.approx(10, rel=0.1)
        assert np.all(np.diff(work.arrival_s) >= 0)
    cv = {name: float(np.std(np.diff(w.arrival_s)) / np.mean(np.diff(w.arrival_s)))
          for name, w in (("poisson", poisson), ("bursty", bursty))}
    assert cv["poisson"] == pytest.approx(1.0, abs=0.05) and cv["bursty"] > 1.3


def test_length_spread_and_offline_and_closed_loop_markers() -> None:
    work = wl.poisson(1, 20000, 1000, 200, seed=2, input_spread=0.3, output_spread=0.5)
    assert work.input_tokens.mean() == pytest.approx(1000, rel=0.02)
    assert work.input_tokens.std() / 1000 == pytest.approx(0.3, rel=0.05)
    assert work.output_tokens.min() >= 1
    assert np.all(wl.offline(5, 10, 10).arrival_s == 0) and wl.offline(5, 10, 10).concurrency is None
    assert wl.closed_loop(4, 10, 10, 10).concurrency == 4
    assert wl.poisson(1, 3, 7, 9)[1] == (wl.poisson(1, 3, 7, 9).arrival_s[1], 7, 9)


@pytest.mark.parametrize(("call", "field"), [
    (lambda: wl.poisson(0, 10, 1, 1), "rate"), (lambda: wl.poisson(1, 0, 1, 1), "n"),
    (lambda: wl.offline(3, 0, 1), "input_tokens"), (lambda: wl.bursty(1, 3, 0.5, 1, 1), "burst_factor"),
    (lambda: wl.closed_loop(0, 3, 1, 1), "concurrency"),
    (lambda: Workload(np.array([1.0, 0.5]), np.array([1, 1]), np.array([1, 1])), "arrival_s"),
    (lambda: Workload(np.array([0.0]), np.array([1]), np.array([0])), "output_tokens"),
])
def test_bad_workloads_are_refused(call: object, field: str) -> None:
    with pytest.raises(SpecError) as error:
        call()  # type: ignore[operator]
    assert error.value.field == field


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_trace_round_trip(tmp_path: Path, suffix: str) -> None:
    work = wl.poisson(3.7, 50, 700, 90, seed=6, input_spread=0.4, output_spread=0.4)
    path = tmp_path / f"trace{suffix}"
    wl.write_trace(work, path)
    back = wl.from_trace(path)
    for name in ("arrival_s", "input_tokens", "output_tokens"):
        assert np.array_equal(getattr(back, name), getattr(work, name))


def test_trace_with_extra_columns_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("output_tokens,user,timestamp,input_tokens\n5,a,0.0,10\n\n7,b,0.5,12.0\n")
    work = wl.from_trace(path)
    assert work.arrival_s.tolist() == [0.0, 0.5] and work.input_tokens.tolist() == [10, 12]
    assert work.output_tokens.tolist() == [5, 7]


@pytest.mark.parametrize(("name", "text", "field", "rule"), [
    ("a.csv", "timestamp,input_tokens,output_tokens\n0.0,10,5\n-1.0,10,5\n", "a.csv:3 timestamp", ">= 0"),
    ("a.csv", "timestamp,input_tokens,output_tokens\n2.0,10,5\n1.0,10,5\n", "a.csv:3 timestamp", "non-decreasing"),
    ("a.csv", "timestamp,input_tokens,output_tokens\n0.0,0,5\n", "a.csv:2 input_tokens", "zero-length"),
    ("a.csv", "timestamp,input_tokens,output_tokens\n0.0,10,2.5\n", "a.csv:2 output_tokens", "whole number"),
    ("a.csv", "timestamp,input_tokens,output_tokens\nsoon,10,5\n", "a.csv:2 timestamp", "number of seconds"),
    ("a.csv", "timestamp,input_tokens,output_tokens\n0.0,10\n", "a.csv:2", "column"),
    ("a.csv", "time,input_tokens,output_tokens\n0.0,10,5\n", "a.csv:1", "timestamp"),
    ("a.csv", "timestamp,input_tokens,output_tokens\n", "trace", "no requests"),
    ("a.csv", "\n\n", "trace", "empty"),
    ("a.jsonl", '{"timestamp": 0, "input_tokens": 5, "output_tokens": 5}\n{"timestamp": 1,\n', "a.jsonl:2",
     "malformed JSON"),
    ("a.jsonl", '{"timestamp": 0, "input_tokens": 5}\n', "a.jsonl:1", "output_tokens"),
    ("a.jsonl", "[0, 5, 5]\n", "a.jsonl:1", "JSON object"),
    ("a.jsonl", '{"timestamp": "x", "input_tokens": 5, "output_tokens": 5}\n', "a.jsonl:1 timestamp", "seconds"),
])
def test_malformed_traces_are_refused(tmp_path: Path, name: str, text: str, field: str, rule: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError) as error:
        wl.from_trace(path)
    assert error.value.field.replace(str(tmp_path) + "/", "") == field
    assert rule in error.value.rule


def test_missing_trace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        wl.from_trace(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------- reference


def reference(model: Linear, work: Workload, chunk: int | None, reserve: bool,
              budget: float = np.inf) -> tuple[list[float], list[float]]:
    """A per-token simulator of the continuous (``chunk`` None; ``budget`` prompt tokens per prefill
    step) and chunked schedulers, written for clarity from the rules in ``serving.py``'s docstring:
    every step loops over every sequence. A sequence holds its prompt plus the tokens it has
    produced (a prompt is held whole from admission); optimistic admission needs that plus one token
    per prefilling sequence, the new one included. Returns first-token and completion times."""
    n = len(work)
    p: list[int] = work.input_tokens.tolist()
    o: list[int] = work.output_tokens.tolist()
    arrival: list[float] = work.arrival_s.tolist()
    gen, left = [0] * n, [0] * n
    first, done = [np.nan] * n, [np.nan] * n
    waiting: list[int] = []
    admitted: list[int] = []  # in admission order; prefilling ones have left > 0
    t, nxt, finished = 0.0, 0, 0

    def held() -> int:
        return sum(p[r] + gen[r] for r in admitted)

    def fits(r: int) -> bool:
        if reserve:
            return sum(p[a] + o[a] for a in admitted) + p[r] + o[r] <= model.kv_capacity_tokens
        prefilling = sum(1 for a in admitted if left[a])
        return held() + p[r] + gen[r] + prefilling + 1 <= model.kv_capacity_tokens

    def token(r: int) -> None:
        nonlocal finished
        if gen[r] == 0:
            first[r] = t
        gen[r] += 1
        if gen[r] == o[r]:
            done[r] = t
            admitted.remove(r)
            finished += 1

    def preempt() -> None:
        while held() > model.kv_capacity_tokens:
            r = admitted.pop()
            left[r] = 0
            waiting.insert(0, r)

    while finished < n:
        while nxt < n and arrival[nxt] <= t:
            waiting.append(nxt)
            nxt += 1
        if chunk is None:
            new: list[int] = []
            while waiting and len(admitted) < model.max_batch and fits(waiting[0]):
                if new and sum(left[a] for a in new) + p[waiting[0]] + gen[waiting[0]] > budget:
                    break
                r = waiting.pop(0)
                admitted.append(r)
                new.append(r)
                left[r] = p[r] + gen[r]
            if new:
                t += model.prefill_time(sum(left[r] for r in new), 0)
                for r in new:
                    left[r] = 0
                    token(r)
                continue
            if admitted:
                preempt()
                t += model.decode_time(len(admitted), held())
                for r in list(admitted):
                    token(r)
                continue
        else:
            while waiting and len(admitted) < model.max_batch and fits(waiting[0]):
                r = waiting.pop(0)
                admitted.append(r)
                left[r] = p[r] + gen[r]
            preempt()
            decoding = [r for r in admitted if not left[r]]
            # the step's budget holds one token per decoding sequence, prompts fill the rest
            budget_left = max(chunk - len(decoding), 0)
            room, pieces, pf_ctx = budget_left, [], 0
            for r in admitted:
                if left[r] and room:
                    pieces.append((r, min(left[r], room)))
                    pf_ctx += p[r] + gen[r] - left[r]
                    room -= pieces[-1][1]
            tokens = budget_left - room
            if tokens or decoding:
                context = sum(p[r] + gen[r] for r in decoding)
                if tokens and decoding:
                    t += model.mixed_time(tokens, pf_ctx, len(decoding), context)
                elif tokens:
                    t += model.prefill_time(tokens, pf_ctx)
                else:
                    t += model.decode_time(len(decoding), context)
                for r in decoding:
                    token(r)
                for r, take in pieces:
                    left[r] -= take
                    if not left[r]:
                        token(r)
                continue
        t = max(t, arrival[nxt])
    return first, done


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("chunk", "budget"), [(None, None), (None, 600), (300, None), (6, None)])
@pytest.mark.parametrize("reserve", [True, False])
def test_matches_a_per_token_reference(seed: int, chunk: int | None, budget: int | None, reserve: bool) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    work = Workload(np.sort(rng.uniform(0, 3, n)), rng.integers(1, 500, n), rng.integers(1, 120, n))
    model = Linear(kv_capacity_tokens=int(rng.integers(700, 3000)), max_batch=int(rng.integers(2, 16)))
    first, done = reference(model, work, chunk, reserve, np.inf if budget is None else budget)
    result = simulate(model, work, "continuous" if chunk is None else "chunked", chunk_tokens=chunk or 1,
                      max_prefill_tokens=budget, admission="reserve" if reserve else "optimistic")
    assert result.first_token_s.tolist() == pytest.approx(first, rel=1e-9)
    assert result.finish_s.tolist() == pytest.approx(done, rel=1e-9)
    if not reserve and seed == 0:
        assert result.stats["preemptions"] > 0  # the optimistic cases do exercise preemption
