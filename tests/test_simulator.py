"""Serving simulator: hand-computable outcomes on a toy step model, and a check against the analytic
saturated throughput of a real replica."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from clusterplan.errors import SpecError
from clusterplan.inference.serving import (
    ServingLoad,
    ServingResult,
    max_rate_at_slo,
    meets_slo,
    sample,
    simulate,
)
from clusterplan.inference.workload import Workload


@dataclass
class ToyReplica:
    """Fixed costs: prefill 1 ms + 1 ms per 1000 tokens; decode 5 ms + 10 us per sequence + 10 ns
    per context token; a mixed step pays the decode costs plus the prefill tokens."""

    kv_capacity_tokens: int = 10_000_000
    max_batch: int = 64

    def prefill_time(self, tokens: int, context: int) -> float:
        return 1e-3 + 1e-6 * tokens + 1e-9 * context

    def decode_time(self, batch: int, total_context: int) -> float:
        return 5e-3 + 1e-5 * batch + 1e-8 * total_context

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        return self.decode_time(batch, total_context) + 1e-6 * prefill_tokens + 1e-9 * prefill_context

    def kv_transfer_time(self, tokens: int) -> float:
        return 0.0


def one(isl: int, osl: int, at: float = 0.0) -> Workload:
    return Workload(np.array([at]), np.array([isl]), np.array([osl]))


def decode_span(replica: ToyReplica, isl: int, osl: int) -> float:
    """Time from the first to the last token of a request served alone."""
    return sum(replica.decode_time(1, isl + g) for g in range(1, osl))


def test_single_request_ttft_and_tpot_are_step_times() -> None:
    replica = ToyReplica()
    result = simulate(replica, one(1000, 50, at=2.5))
    assert result.ttft_s[0] == pytest.approx(replica.prefill_time(1000, 0), rel=1e-12)
    assert result.tpot_s[0] == pytest.approx(decode_span(replica, 1000, 50) / 49, rel=1e-12)
    assert result.first_token_s[0] == pytest.approx(2.5 + replica.prefill_time(1000, 0), rel=1e-12)
    assert result.iterations == 50
    assert result.mean_batch == 1.0


def test_long_prompt_is_chunked() -> None:
    replica = ToyReplica()
    result = simulate(replica, one(2500, 3), chunk_tokens=1000)
    chunks = replica.prefill_time(1000, 0) + replica.prefill_time(1000, 1000) + replica.prefill_time(500, 2000)
    assert result.ttft_s[0] == pytest.approx(chunks, rel=1e-12)
    assert result.iterations == 3 + 2


def test_one_token_output_has_no_tpot() -> None:
    result = simulate(ToyReplica(), one(100, 1))
    assert np.isnan(result.tpot_s[0])
    assert result.finish_s[0] == result.first_token_s[0]
    assert meets_slo(result, 1.0, 1e-9)


def test_throughput_follows_rate_at_low_load() -> None:
    load = ServingLoad(rate_per_s=2.0, requests=400, input_tokens=200, output_tokens=20, length_spread=0.5)
    result = simulate(ToyReplica(), sample(load))
    assert result.requests_per_s == pytest.approx(2.0, rel=0.12)
    # Little's law: mean requests in the system = arrival rate x mean time in the system
    in_system = result.e2e_s.sum() / result.span_s
    assert in_system == pytest.approx(result.requests_per_s * result.e2e_s.mean(), rel=1e-9)
    assert in_system < 0.5  # lightly loaded: mostly one request at a time
    assert result.percentile("ttft", 99) < 0.05


def test_overload_saturates_near_analytic_batch_throughput() -> None:
    replica = ToyReplica(max_batch=16)
    isl, osl, batch = 100, 100, 16
    step = replica.decode_time(batch, batch * (isl + osl // 2))
    analytic = batch * osl / (osl * step + batch * isl * 1e-6)  # decode steps + the piggybacked prompts
    small = simulate(replica, sample(ServingLoad(rate_per_s=1000, requests=200, input_tokens=isl, output_tokens=osl)))
    large = simulate(replica, sample(ServingLoad(rate_per_s=1000, requests=800, input_tokens=isl, output_tokens=osl)))
    assert large.output_tokens_per_s == pytest.approx(analytic, rel=0.05)
    assert large.mean_batch == pytest.approx(batch, rel=0.05)
    assert large.percentile("ttft", 50) > 3 * small.percentile("ttft", 50)  # the queue grows with requests


def test_tiny_kv_cache_serialises_requests() -> None:
    replica = ToyReplica(kv_capacity_tokens=150)
    work = Workload(np.zeros(5), np.full(5, 100), np.full(5, 50))
    result = simulate(replica, work)
    assert result.mean_batch == 1.0
    assert np.all(result.first_token_s[1:] > result.finish_s[:-1])
    alone = replica.prefill_time(100, 0) + decode_span(replica, 100, 50)
    assert result.finish_s == pytest.approx(alone * np.arange(1, 6), rel=1e-12)


def test_max_batch_limits_the_batch() -> None:
    replica = ToyReplica(max_batch=2)
    work = Workload(np.zeros(6), np.full(6, 10), np.full(6, 10))
    result = simulate(replica, work)
    assert result.mean_batch <= 2.0
    # pairs run together: requests 2k and 2k+1 start together, after the previous pair finished
    assert np.all(result.first_token_s[2::2] > result.finish_s[1:-1:2])


def test_request_larger_than_cache_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        simulate(ToyReplica(kv_capacity_tokens=1000), one(900, 200))
    assert info.value.field == "input_tokens"
    with pytest.raises(SpecError):
        simulate(ToyReplica(), one(10, 10), chunk_tokens=0)


def test_closed_loop_issues_next_request_on_finish() -> None:
    replica = ToyReplica()
    work = Workload(np.zeros(3), np.full(3, 100), np.full(3, 10), concurrency=1)
    result = simulate(replica, work)
    assert result.arrival_s[1:] == pytest.approx(result.finish_s[:-1], rel=0, abs=0)
    assert np.all(result.ttft_s == pytest.approx(replica.prefill_time(100, 0), rel=1e-12))


def test_sampling_is_deterministic_and_has_the_asked_moments() -> None:
    load = ServingLoad(rate_per_s=5.0, requests=50_000, input_tokens=1000, output_tokens=200, length_spread=0.5)
    a, b = sample(load), sample(load)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.input_tokens, b.input_tokens)
    other = sample(load.model_copy(update={"seed": 1}))
    assert not np.array_equal(a.input_tokens, other.input_tokens)
    assert a.input_tokens.mean() == pytest.approx(1000, rel=0.02)
    assert a.output_tokens.std() / a.output_tokens.mean() == pytest.approx(0.5, rel=0.05)
    assert np.diff(a.arrival_s).mean() == pytest.approx(0.2, rel=0.02)
    assert a.input_tokens.min() >= 1
    fixed = sample(load.model_copy(update={"length_spread": 0.0, "requests": 10}))
    assert set(fixed.output_tokens.tolist()) == {200}
    small = load.model_copy(update={"requests": 300})
    r1, r2 = simulate(ToyReplica(), sample(small)), simulate(ToyReplica(), sample(small))
    assert np.array_equal(r1.finish_s, r2.finish_s)


@pytest.mark.parametrize("bad", [
    {"rate_per_s": -1.0}, {"rate_per_s": 0.0}, {"rate_per_s": float("inf")}, {"requests": 0},
    {"requests": 2_000_000}, {"input_tokens": 0}, {"output_tokens": 0}, {"length_spread": -0.1},
    {"length_spread": 3.5}, {"seed": -1}, {"extra": 1},
])
def test_load_validation(bad: dict[str, float]) -> None:
    fields: dict[str, float] = {"rate_per_s": 1.0, "input_tokens": 100, "output_tokens": 10}
    with pytest.raises((ValidationError, SpecError)):
        ServingLoad(**{**fields, **bad})


@dataclass
class ToyWithOffline(ToyReplica):
    def offline_throughput(self, input_tokens: float, output_tokens: float) -> dict[str, float]:
        step = self.decode_time(self.max_batch, int(self.max_batch * (input_tokens + output_tokens / 2)))
        return {"output_tokens_per_s": self.max_batch * output_tokens
                / (output_tokens * step + self.max_batch * input_tokens * 1e-6)}


LOAD = ServingLoad(rate_per_s=1.0, requests=300, input_tokens=500, output_tokens=30, length_spread=0.3)


@settings(max_examples=6, deadline=None)
@given(ttft=st.floats(0.002, 0.5), tpot=st.floats(0.005, 0.02), looser=st.floats(1.0, 3.0))
def test_max_rate_is_monotone_in_the_slo(ttft: float, tpot: float, looser: float) -> None:
    replica = ToyWithOffline(max_batch=16)
    tight = max_rate_at_slo(replica, LOAD, ttft, tpot)
    loose = max_rate_at_slo(replica, LOAD, ttft * looser, tpot * looser)
    assert loose >= tight


def test_max_rate_meets_the_slo_and_finds_the_knee() -> None:
    for replica in (ToyWithOffline(max_batch=16), ToyReplica(max_batch=16)):  # analytic start, then doubling
        rate = max_rate_at_slo(replica, LOAD, 0.1, 0.01)
        assert rate > 0
        at = simulate(replica, sample(LOAD.model_copy(update={"rate_per_s": rate})))
        assert meets_slo(at, 0.1, 0.01)
        above = simulate(replica, sample(LOAD.model_copy(update={"rate_per_s": rate * 1.2})))
        assert not meets_slo(above, 0.1, 0.01)
    # a TTFT below one prompt's prefill time can never be met
    assert max_rate_at_slo(ToyWithOffline(), LOAD, 1e-4, 1.0) == 0.0


def test_percentile_rejects_unknown_metric() -> None:
    result: ServingResult = simulate(ToyReplica(), one(10, 10))
    with pytest.raises(SpecError):
        result.percentile("latency", 50)
    assert set(result.summary()) >= {"ttft_p99_s", "tpot_p50_s", "output_tokens_per_s", "requests_per_s", "mean_batch"}


# ---------------------------------------------------------------------------------------------- real replica


@pytest.fixture(scope="module")
def replica_70b():  # type: ignore[no-untyped-def]
    from clusterplan.catalog import hardware_for, load_model, load_system
    from clusterplan.inference.step import Deployment, ReplicaModel

    return ReplicaModel(load_model("llama3-70b"), hardware_for(load_system("dgx-h100")),
                        Deployment(tp=8, weights="fp8", kv_cache="fp8"))


def test_real_replica_single_request_and_saturation(replica_70b) -> None:  # type: ignore[no-untyped-def]
    for isl in (1000, 8192):
        alone = simulate(replica_70b, one(isl, 20))
        assert alone.ttft_s[0] == pytest.approx(replica_70b.single_request_ttft(isl), rel=1e-9)
    analytic = float(replica_70b.offline_throughput(1000, 200)["output_tokens_per_s"])
    result = simulate(replica_70b, sample(ServingLoad(rate_per_s=500, requests=6000, input_tokens=1000,
                                                      output_tokens=200)))
    assert result.output_tokens_per_s == pytest.approx(analytic, rel=0.25)


def test_workload_validation() -> None:
    with pytest.raises(SpecError):
        Workload(np.array([1.0, 0.5]), np.array([1, 1]), np.array([1, 1]))  # unsorted
    with pytest.raises(SpecError):
        Workload(np.array([0.0]), np.array([0]), np.array([1]))  # empty prompt
    with pytest.raises(SpecError):
        Workload(np.array([0.0, 1.0]), np.array([1]), np.array([1, 1]))  # ragged


def test_arrival_during_decode_joins_the_next_step() -> None:
    # B arrives while A decodes its second token; it must be prefilled in A's last step (mixed)
    replica = ToyReplica()
    result = simulate(replica, Workload(np.array([0.0, 0.003]), np.array([100, 100]), np.array([3, 2])))
    t2 = replica.prefill_time(100, 0) + replica.decode_time(1, 101)
    assert result.finish_s[0] == pytest.approx(t2 + replica.mixed_time(100, 0, 1, 102), rel=1e-12)
    assert result.first_token_s[1] == result.finish_s[0]
    assert result.finish_s[1] == pytest.approx(result.first_token_s[1] + replica.decode_time(1, 101), rel=1e-12)
    assert result.iterations == 4
