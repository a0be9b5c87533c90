"""Serving workloads: generators, traces and their refusals (issue #7)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterplan.errors import SpecError
from clusterplan.inference.workload import Workload, bursty, closed_loop, from_trace, offline, poisson, write_trace

Cli = Callable[[list[str]], tuple[int, str, str]]


def test_poisson_rate_and_lengths() -> None:
    w = poisson(rate=20.0, n=20_000, input_tokens=1000, output_tokens=200, seed=1, output_spread=0.5)
    assert len(w) / w.arrival_s[-1] == pytest.approx(20.0, rel=0.03)
    assert np.all(w.input_tokens == 1000)
    assert w.output_tokens.mean() == pytest.approx(200, rel=0.03)
    assert w.output_tokens.std() / w.output_tokens.mean() == pytest.approx(0.5, rel=0.1)


def test_bursty_keeps_the_mean_rate_and_is_burstier_than_poisson() -> None:
    smooth = poisson(rate=10.0, n=20_000, input_tokens=100, output_tokens=10, seed=2)
    bursts = bursty(rate=10.0, n=20_000, burst_factor=8.0, input_tokens=100, output_tokens=10, seed=2)
    assert len(bursts) / bursts.arrival_s[-1] == pytest.approx(10.0, rel=0.15)
    cv = [np.diff(w.arrival_s).std() / np.diff(w.arrival_s).mean() for w in (smooth, bursts)]
    assert cv[0] == pytest.approx(1.0, rel=0.05) and cv[1] > 1.3


def test_offline_and_closed_loop() -> None:
    assert np.all(offline(5, 100, 10).arrival_s == 0)
    loop = closed_loop(4, 10, 100, 10)
    assert loop.closed_loop and loop.concurrency == 4


@settings(max_examples=25, deadline=None)
@given(rate=st.floats(0.1, 1000), n=st.integers(1, 200), seed=st.integers(0, 2**16),
       suffix=st.sampled_from([".csv", ".jsonl"]))
def test_trace_round_trip(tmp_path_factory: pytest.TempPathFactory, rate: float, n: int, seed: int,
                          suffix: str) -> None:
    w = poisson(rate, n, 512, 64, seed=seed, input_spread=0.3, output_spread=0.3)
    path = tmp_path_factory.mktemp("trace") / f"t{suffix}"
    write_trace(w, path)
    back = from_trace(path)
    np.testing.assert_array_equal(back.arrival_s, w.arrival_s)
    np.testing.assert_array_equal(back.input_tokens, w.input_tokens)
    np.testing.assert_array_equal(back.output_tokens, w.output_tokens)


@pytest.mark.parametrize(("text", "rule"), [
    ("timestamp,input_tokens\n0,5\n", "lacks column"),
    ("timestamp,input_tokens,output_tokens\n0,5,1\n-1,5,1\n", ">= 0"),
    ("timestamp,input_tokens,output_tokens\n1,5,1\n0,5,1\n", "non-decreasing"),
    ("timestamp,input_tokens,output_tokens\n0,0,1\n", ">= 1"),
    ("timestamp,input_tokens,output_tokens\n0,2.5,1\n", "whole number"),
    ("", "empty"),
])
def test_malformed_traces_are_refused_with_the_line(tmp_path: Path, text: str, rule: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(SpecError, match=rule):
        from_trace(path)


def test_malformed_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"timestamp": 0, "input_tokens": 5, "output_tokens": 1}\n{"timestamp": 1,\n')
    with pytest.raises(SpecError, match=r"t\.jsonl:2"):
        from_trace(path)


def test_workload_rules() -> None:
    with pytest.raises(SpecError, match="sorted"):
        Workload(np.array([1.0, 0.0]), np.array([1, 1]), np.array([1, 1]))
    with pytest.raises(SpecError, match="rate"):
        poisson(-1.0, 10, 100, 10)
    with pytest.raises(SpecError, match="burst_factor"):
        bursty(1.0, 10, 0.5, 100, 10)


def test_serve_replays_a_trace(cli_run: Cli, tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    write_trace(poisson(2.0, 50, 1000, 100, seed=3), path)
    base = ["serve", "--model", "llama3-8b", "--system", "dgx-h100", "--weights", "fp8", "--trace", str(path)]
    code, out, err = cli_run([*base, "--json"])
    assert code == 0, err
    assert '"replay"' in out
    code, out, err = cli_run([*base[:-1], str(tmp_path / "missing.csv")])
    assert code == 2 and out == "" and "file not found" in err
