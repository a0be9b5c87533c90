"""Failure rates, the closed-form goodput model, the Llama 3 check, and the reliability CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from cliutil import run_cli as run
from clusterplan.catalog import load_model, load_system
from clusterplan.reliability.failures import inputs_for, job_rates, per_unit_rates
from clusterplan.reliability.model import ReliabilityInputs, closed_form, optimal_interval, wall_time, young_interval

DAY = 86400.0




def _inputs(rate_per_hour: float = 1.0, **fields: object) -> ReliabilityInputs:
    base = ReliabilityInputs(cause_rates={"accelerator": rate_per_hour / 3600.0}, planned_rate=0.0, detection_s=60.0,
                             restart_s=300.0, restore_s=30.0, checkpoint_write_s=20.0, repair_s=4 * 3600.0,
                             hardware_causes=frozenset({"accelerator"}))
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def test_reference_rates_reproduce_the_llama3_counts() -> None:
    rates = job_rates(load_system("dgx-h100"), 16_384)
    assert sum(rates.values()) * 54 * DAY == pytest.approx(419.0)
    assert rates["accelerator"] * 54 * DAY == pytest.approx(196.0)
    assert rates["hbm"] * 54 * DAY == pytest.approx(72.0)


def test_rates_scale_with_component_counts() -> None:
    h100 = job_rates(load_system("dgx-h100"), 16_384)
    trn2 = job_rates(load_system("trn2"), 16_384)  # 16 chips per host: half the hosts
    assert trn2["accelerator"] == pytest.approx(h100["accelerator"])
    assert trn2["host"] == pytest.approx(h100["host"] / 2)
    double = job_rates(load_system("dgx-h100"), 32_768)
    assert sum(double.values()) == pytest.approx(2 * sum(h100.values()))
    unit, rate = per_unit_rates()["accelerator"]
    assert unit == "chip" and rate == pytest.approx(196 / (16_384 * 54 * DAY))


def test_wall_time_formula_by_hand() -> None:
    inputs = _inputs()
    tau, work = 3600.0, 100 * 3600.0
    lam = 1 / 3600.0
    expected = work * (1 + 20 / tau) / (1 - lam * (60 + 300 + 30 + (tau + 20) / 2))
    assert wall_time(inputs, work, tau) == pytest.approx(expected)


def test_optimal_interval_is_near_young_and_beats_neighbours() -> None:
    inputs = _inputs(rate_per_hour=0.5)
    best = optimal_interval(inputs)
    assert best == pytest.approx(young_interval(inputs), rel=0.15)
    for factor in (0.5, 2.0):
        assert wall_time(inputs, 1.0, best) <= wall_time(inputs, 1.0, best * factor)


def test_recovery_modes_order() -> None:
    spares = closed_form(_inputs(), 100 * 3600.0)["time_to_train_s"]
    elastic = closed_form(_inputs(recovery="elastic", replicas=16), 100 * 3600.0)["time_to_train_s"]
    waiting = closed_form(_inputs(recovery="wait"), 100 * 3600.0)["time_to_train_s"]
    assert spares < elastic < waiting


def test_a_job_that_fails_faster_than_it_recovers_never_finishes() -> None:
    result = closed_form(_inputs(rate_per_hour=20.0), 3600.0)
    assert math.isinf(result["time_to_train_s"]) and result["goodput"] == 0.0


def test_no_failures_cost_nothing_but_checkpoints() -> None:
    inputs = _inputs(rate_per_hour=0.0)
    assert closed_form(inputs, 1000.0, interval_s=100.0)["time_to_train_s"] == pytest.approx(1000.0 * 1.2)


def test_llama3_cluster_over_54_days_matches_the_published_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #5: catalog defaults on 16,384 H100 over 54 days: ~419 unexpected interruptions
    (+-15 %) and more than 90 % effective training time (Dubey et al. 2024, section 3.3.4)."""
    code, out, err = run(capsys, ["reliability", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", "16384",
                                  "--tp", "8", "--pp", "16", "--first-stage-layers", "7", "--last-stage-layers", "7",
                                  "--duration", "54d", "--json"])
    assert code == 0, err
    record = json.loads(out)
    assert record["interruptions_expected"] == pytest.approx(419, rel=0.15)
    assert record["goodput"] > 0.90
    for key in ("interruptions_expected", "goodput", "checkpoint_interval_s", "time_to_train_failure_free_s",
                "time_to_train_s"):
        assert key in record


def test_async_checkpoints_beat_sync_at_scale() -> None:
    model, system = load_model("llama3-405b"), load_system("trn2-ultraserver")
    sync = inputs_for(model, system, 65_536, checkpoint="sync")
    fast = inputs_for(model, system, 65_536, checkpoint="async")
    assert fast.checkpoint_write_s < sync.checkpoint_write_s
    assert closed_form(fast, 30 * DAY)["goodput"] >= closed_form(sync, 30 * DAY)["goodput"]


def test_train_reports_time_with_failures(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "1024",
                                "--seq", "8192", "--global-batch", "1024", "--zero", "2", "--tokens", "15T", "--json"])
    assert code == 0
    record = json.loads(out)
    failures = record["reliability"]
    assert failures["time_to_train_s"] > record["time_to_train_s"]
    assert 0.5 < failures["goodput"] < 1.0


@pytest.mark.parametrize(("extra", "needle"), [
    (["--tokens", "1T", "--duration", "5d"], "exactly one"),
    ([], "exactly one"),
    (["--duration", "5d", "--checkpoint", "sometimes"], "--checkpoint"),
    (["--duration", "5d", "--recovery", "pray"], "--recovery"),
    (["--duration", "-5d"], "--duration"),
    (["--duration", "5d", "--checkpoint-interval", "0s"], "--checkpoint-interval"),
    (["--duration", "5d", "--restart", "-3s"], "--restart"),
    (["--duration", "5d", "--failure-scale", "-1"], "--failure-scale"),
])
def test_reliability_refuses_bad_input(capsys: pytest.CaptureFixture[str], extra: list[str], needle: str) -> None:
    code, out, err = run(capsys, ["reliability", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64",
                                  *extra])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
