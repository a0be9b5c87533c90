"""Monte Carlo failure simulator: reproducible, exact without failures, and in agreement with the
closed form (first order, Young 1974 / Daly 2006) and with the sampled process' exact mean."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest

from clusterplan.errors import SpecError
from clusterplan.reliability.model import ReliabilityInputs, optimal_interval, wall_time
from clusterplan.reliability.montecarlo import PLANNED, expected_wall_time, simulate

HOUR = 3600.0
DAY = 86400.0
WORK = 30 * DAY
TRIALS = 2000
HARDWARE = frozenset({"accelerator", "network"})


def inputs(rates_per_hour: dict[str, float], **overrides: object) -> ReliabilityInputs:
    base = ReliabilityInputs(cause_rates={cause: rate / HOUR for cause, rate in rates_per_hour.items()},
                             planned_rate=0.0, detection_s=60.0, restart_s=180.0, restore_s=60.0,
                             checkpoint_write_s=30.0, repair_s=0.0, hardware_causes=HARDWARE)
    return replace(base, **overrides)  # type: ignore[arg-type]


REGIMES = {
    # MTBF 10 h: waste ~5 %
    "low": inputs({"accelerator": 0.08, "software": 0.02}),
    # MTBF 1 h, 5 min downtime: waste ~20 %
    "high": inputs({"accelerator": 0.7, "software": 0.2, "network": 0.1}),
    # hardware failures wait 30 min for a repair
    "wait": inputs({"accelerator": 0.15, "software": 0.05}, recovery="wait", repair_s=1800.0),
    # elastic: one replica of 8 fewer for a 4 h repair
    "elastic": inputs({"accelerator": 0.4, "software": 0.1}, recovery="elastic", repair_s=4 * HOUR, replicas=8),
    # planned maintenance every 4 h besides the failures
    "planned": inputs({"accelerator": 0.4, "software": 0.1}, planned_rate=0.25 / HOUR),
}


def test_reproducible_with_a_seed() -> None:
    case = REGIMES["high"]
    tau = optimal_interval(case)
    first = simulate(case, WORK, tau, 200, seed=7)
    again = simulate(case, WORK, tau, 200, seed=7)
    other = simulate(case, WORK, tau, 200, seed=8)
    np.testing.assert_array_equal(first.wall_time_s, again.wall_time_s)
    np.testing.assert_array_equal(first.interruptions, again.interruptions)
    assert first.lost_s_by_cause == again.lost_s_by_cause
    assert not np.array_equal(first.wall_time_s, other.wall_time_s)


@pytest.mark.parametrize(("work", "tau"), [(WORK, 3600.0), (WORK, 1234.5), (100.0, 1e6)])
def test_no_failures_is_work_plus_checkpoints_exactly(work: float, tau: float) -> None:
    case = inputs({})
    result = simulate(case, work, tau, 50)
    expected = work + math.ceil(work / tau) * case.checkpoint_write_s
    assert np.all(result.wall_time_s == expected)
    assert result.interruptions.sum() == 0 and result.finished.all()
    assert result.goodput() == pytest.approx(work / expected, rel=1e-15)
    if work % tau == 0:
        assert expected == pytest.approx(wall_time(case, work, tau), rel=1e-15)
    # a failure rate so low that no failure is drawn: the sampled path gives the same time
    rare = simulate(inputs({"software": 1e-12}), work, tau, 50)
    assert rare.interruptions.sum() == 0
    np.testing.assert_allclose(rare.wall_time_s, expected, rtol=1e-12)


@pytest.mark.parametrize("name", list(REGIMES))
def test_mean_wall_time_agrees_with_closed_form(name: str) -> None:
    case = REGIMES[name]
    tau = optimal_interval(case)
    result = simulate(case, WORK, tau, TRIALS, seed=1)
    assert result.finished.all()
    mean = result.mean_wall_time()
    standard_error = float(np.std(result.wall_time_s)) / math.sqrt(TRIALS)
    assert mean == pytest.approx(wall_time(case, WORK, tau), rel=0.02)  # first order
    # the exact mean of the sampled process, to sampling error
    assert abs(mean - expected_wall_time(case, WORK, tau)) < max(4 * standard_error, 1e-3 * mean)
    assert result.goodput() == pytest.approx(WORK / mean, rel=0.01)


@pytest.mark.parametrize("name", list(REGIMES))
def test_interruptions_are_rate_times_wall_time(name: str) -> None:
    case = REGIMES[name]
    result = simulate(case, WORK, optimal_interval(case), TRIALS, seed=2)
    mean = result.mean_wall_time()
    assert result.interruptions.mean() == pytest.approx(case.failure_rate * mean, rel=0.03)
    if case.planned_rate:
        assert result.planned_interruptions.mean() == pytest.approx(case.planned_rate * mean, rel=0.03)
        assert result.lost_s_by_cause[PLANNED] == pytest.approx(
            result.planned_interruptions.mean() * (case.restart_s + case.restore_s), rel=1e-12)
    else:
        assert result.planned_interruptions.sum() == 0 and PLANNED not in result.lost_s_by_cause


def test_lost_time_by_cause_is_proportional_to_cause_rates() -> None:
    case = REGIMES["high"]
    result = simulate(case, WORK, optimal_interval(case), TRIALS, seed=3)
    lost = result.lost_s_by_cause
    total = sum(lost.values())
    for cause, rate in case.cause_rates.items():
        assert lost[cause] / total == pytest.approx(rate / case.failure_rate, rel=0.02)
    # mean per failure: the downtime plus about half a checkpoint cycle of lost work
    per_failure = total / result.interruptions.mean()
    assert case.downtime_per_failure() < per_failure < case.downtime_per_failure() + optimal_interval(case) + 30


@pytest.mark.parametrize("name", list(REGIMES))
def test_lost_time_accounts_for_all_of_the_wall_time(name: str) -> None:
    case = REGIMES[name]
    tau = optimal_interval(case)
    result = simulate(case, WORK, tau, 300, seed=4)
    checkpoints = math.ceil(WORK / tau) * case.checkpoint_write_s
    assert WORK + checkpoints + sum(result.lost_s_by_cause.values()) == pytest.approx(result.mean_wall_time(),
                                                                                      rel=1e-12)


def test_hardware_failures_cost_their_repair() -> None:
    case = REGIMES["wait"]
    result = simulate(case, WORK, optimal_interval(case), TRIALS, seed=5)
    per_rate = {cause: result.lost_s_by_cause[cause] / rate for cause, rate in case.cause_rates.items()}
    # per failure, an accelerator failure costs the 30 min repair more than a software one
    gap = (per_rate["accelerator"] - per_rate["software"]) / result.mean_wall_time()
    assert gap == pytest.approx(case.repair_s, rel=0.03)


def test_optimal_interval_beats_shorter_and_longer_ones() -> None:
    case = REGIMES["high"]
    tau = optimal_interval(case)
    means = {factor: simulate(case, WORK, factor * tau, 500, seed=6).mean_wall_time() for factor in (0.3, 1.0, 3.0)}
    assert means[1.0] < means[0.3] and means[1.0] < means[3.0]
    assert means[0.3] / means[1.0] > 1.05 and means[3.0] / means[1.0] > 1.05  # clearly, not by noise


def test_short_last_segment_matches_the_exact_mean() -> None:
    # 2.5 segments of 1 MTBF each: most of the time goes to lost work, and the short last segment matters
    case = inputs({"software": 1.0}, checkpoint_write_s=60.0)
    work, tau = 2.5 * HOUR, HOUR
    result = simulate(case, work, tau, 20_000, seed=9, max_failures_per_block=16)
    mean = result.mean_wall_time()
    standard_error = float(np.std(result.wall_time_s)) / math.sqrt(result.trials)
    assert abs(mean - expected_wall_time(case, work, tau)) < 4 * standard_error
    assert result.interruptions.mean() == pytest.approx(case.failure_rate * mean, rel=0.03)


def test_block_size_does_not_change_the_distribution() -> None:
    case = REGIMES["high"]
    tau = optimal_interval(case)
    small = simulate(case, WORK, tau, 500, seed=10, max_failures_per_block=7)
    large = simulate(case, WORK, tau, 500, seed=11)
    spread = math.hypot(float(np.std(small.wall_time_s)), float(np.std(large.wall_time_s))) / math.sqrt(500)
    assert abs(small.mean_wall_time() - large.mean_wall_time()) < 4 * spread


def test_runs_that_never_finish_stop_at_the_cap() -> None:
    # an interruption every 2.4 min and 13 min of downtime each: recoveries never catch up
    case = inputs({"accelerator": 20.0, "software": 3.0, "network": 2.0}, detection_s=120.0, restart_s=600.0,
                  checkpoint_write_s=60.0)
    tau = optimal_interval(case)
    assert wall_time(case, 90 * DAY, tau) == math.inf
    start = time.perf_counter()
    result = simulate(case, 90 * DAY, tau, 1000)
    assert time.perf_counter() - start < 5.0
    assert not result.finished.any()
    assert np.all(np.isinf(result.wall_time_s))
    assert result.percentiles() == {"p50": math.inf, "p90": math.inf, "p99": math.inf}
    assert result.goodput() == 0.0
    assert result.record()["unfinished"] == 1000


def test_record() -> None:
    case = REGIMES["planned"]
    result = simulate(case, WORK, optimal_interval(case), 100)
    record = result.record()
    assert set(record) >= {"trials", "time_to_train_s", "mean_time_to_train_s", "goodput_mean", "interruptions_mean",
                           "lost_s_by_cause"}
    assert record["trials"] == 100
    pct = record["time_to_train_s"]
    assert isinstance(pct, dict) and pct == result.percentiles()
    assert WORK < pct["p50"] <= pct["p90"] <= pct["p99"]
    assert set(result.lost_s_by_cause) == {"accelerator", "software", PLANNED}
    json.dumps(record, allow_nan=False)
    with pytest.raises(ValueError):
        result.wall_time_s[0] = 0.0  # read-only


def test_zero_work_and_bad_inputs() -> None:
    case = REGIMES["high"]
    empty = simulate(case, 0.0, 600.0, 10)
    assert np.all(empty.wall_time_s == 0) and empty.finished.all() and empty.goodput() == 1.0
    bad: tuple[dict[str, float], ...] = ({"work_s": -1.0}, {"interval_s": 0.0}, {"interval_s": math.inf},
                                         {"trials": 0}, {"max_failures_per_block": 0})
    for kwargs in bad:
        arguments = {"work_s": WORK, "interval_s": 600.0, "trials": 10, **kwargs}
        with pytest.raises(SpecError):
            simulate(case, **arguments)  # type: ignore[arg-type]
    with pytest.raises(SpecError):
        simulate(inputs({"software": -1.0}), WORK, 600.0, 10)
