"""Monte Carlo failure simulator: reproducible, exact without failures, bounded, and in agreement
with the closed form (the exact mean of the sampled process: Daly 2006, folded outages as
M/G/infinity busy periods) at several scales, with and without folding."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest

from clusterplan.catalog import load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.reliability.failures import RecoverySettings, inputs_for
from clusterplan.reliability.model import ReliabilityInputs, closed_form, optimal_interval, wall_time
from clusterplan.reliability.montecarlo import MAX_EVENTS, PLANNED, expected_events, expected_wall_time, simulate

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
    # the same without folding: each failure during an outage adds its own
    "unfolded": inputs({"accelerator": 0.7, "software": 0.2, "network": 0.1}, fold=False),
    # hardware failures wait 30 min for a repair
    "wait": inputs({"accelerator": 0.15, "software": 0.05}, replacement="wait", repair_s=1800.0),
    # elastic: one replica of 8 fewer for a 4 h repair; the step in flight is redone
    "elastic": inputs({"accelerator": 0.4, "software": 0.1}, replacement="wait", repair_s=4 * HOUR, replicas=8,
                      elastic=True, elastic_pause_s=10.0, step_s=4.0),
    # planned maintenance every 4 h besides the failures
    "planned": inputs({"accelerator": 0.4, "software": 0.1}, planned_rate=0.25 / HOUR),
    # failures every 6 min, 5 min outages: rho = 0.83, a third of the time recovering
    "crowded": inputs({"accelerator": 8.0, "software": 2.0}, checkpoint_write_s=5.0),
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
    # the closed form is the exact mean of the sampled process: agreement to sampling error
    assert expected_wall_time(case, WORK, tau) == wall_time(case, WORK, tau)
    assert abs(mean - wall_time(case, WORK, tau)) < max(4 * standard_error, 1e-3 * mean)
    assert result.goodput() == pytest.approx(WORK / mean, rel=0.01)


#: Rainier-scale jobs (1,024-chip replicas of Llama 3 405B on Trn2 UltraServers), Llama 3-era and
#: built-for-scale recovery: the Monte Carlo agrees with the closed form at every scale.
SCALES = [(chips, settings) for chips in (16_384, 262_144, 499_712, 999_424)
          for settings in (RecoverySettings(), RecoverySettings(checkpoint="memory", elastic=True, detection_s=30.0,
                                                                 restart_s=90.0))]


@pytest.mark.parametrize(("chips", "settings"), SCALES)
def test_monte_carlo_agrees_with_the_closed_form_at_scale(chips: int, settings: RecoverySettings) -> None:
    inputs = inputs_for(load_model("llama3-405b"), load_system("trn2-ultraserver"), chips, chips // 1024, settings,
                        1.1)
    work = 6 * DAY
    estimate = closed_form(inputs, work)
    trials = 200
    result = simulate(inputs, work, estimate.interval_s, trials, seed=12)
    assert result.finished.all()
    mean = result.mean_wall_time()
    standard_error = float(np.std(result.wall_time_s)) / math.sqrt(trials)
    assert abs(mean - estimate.wall_time_s) < max(4 * standard_error, 1e-3 * mean)
    assert result.goodput() == pytest.approx(estimate.goodput, rel=0.03)
    assert result.interruptions.mean() == pytest.approx(estimate.interruptions, rel=0.05)


def test_folding_never_costs_more_in_the_monte_carlo() -> None:
    folded, unfolded = REGIMES["high"], REGIMES["unfolded"]
    tau = optimal_interval(folded)
    a = simulate(folded, WORK, tau, 500, seed=13)
    b = simulate(unfolded, WORK, tau, 500, seed=13)
    assert a.goodput() > b.goodput()
    assert wall_time(folded, WORK, tau) < wall_time(unfolded, WORK, tau)


@pytest.mark.parametrize("name", list(REGIMES))
def test_interruptions_are_rate_times_wall_time(name: str) -> None:
    case = REGIMES[name]
    result = simulate(case, WORK, optimal_interval(case), TRIALS, seed=2)
    mean = result.mean_wall_time()
    assert result.interruptions.mean() == pytest.approx(case.failure_rate * mean, rel=0.03)
    if case.planned_rate:
        assert result.planned_interruptions.mean() == pytest.approx(case.planned_rate * mean, rel=0.03)
        # each planned one is charged its outage, or what it adds when it folds into one under way
        planned_cost = result.planned_interruptions.mean() * case.planned_outage_s
        assert 0.9 * planned_cost < result.lost_s_by_cause[PLANNED] <= planned_cost
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
    # per failure, an accelerator failure costs the 30 min repair more than a software one, less
    # what folding saves when it lands in an outage already under way (rho = 0.09 here)
    gap = (per_rate["accelerator"] - per_rate["software"]) / result.mean_wall_time()
    assert 0.85 * case.repair_s < gap < case.repair_s


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


def test_runs_that_never_finish_are_refused_and_folded_ones_finish() -> None:
    # an interruption every 2.4 min and 13 min of outage each: rho = 5.4
    rates = {"accelerator": 20.0, "software": 3.0, "network": 2.0}
    never = inputs(rates, detection_s=120.0, restart_s=600.0, checkpoint_write_s=60.0, fold=False)
    tau = optimal_interval(never)
    assert wall_time(never, 90 * DAY, tau) == math.inf
    start = time.perf_counter()
    with pytest.raises(SpecError, match="outpace"):
        simulate(never, 90 * DAY, tau, 1000)
    # folded, the same job ends (in e^5.4 = 220 times its running time): a short one, sampled
    folded = replace(never, fold=True)
    result = simulate(folded, HOUR, tau, 20, seed=3)
    assert time.perf_counter() - start < 20.0
    assert result.finished.all() and np.all(np.isfinite(result.wall_time_s))
    standard_error = float(np.std(result.wall_time_s)) / math.sqrt(20)
    assert abs(result.mean_wall_time() - wall_time(folded, HOUR, tau)) < 4 * standard_error


def test_work_is_bounded() -> None:
    case = REGIMES["crowded"]
    per_trial = expected_events(case, WORK, optimal_interval(case))
    trials = int(MAX_EVENTS / per_trial) + 1
    start = time.perf_counter()
    with pytest.raises(SpecError, match="budget"):
        simulate(case, WORK, optimal_interval(case), trials)
    with pytest.raises(SpecError, match="budget"):
        simulate(case, 1e30, optimal_interval(case), 1)
    assert time.perf_counter() - start < 1.0


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
    assert record["interruptions_mean"] == pytest.approx(case.failure_rate * result.mean_wall_time(), rel=0.1)
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
