"""Failure rates, the closed-form goodput model (folded outages, recovery settings, interval
floor), the largest job at 90 % goodput, the Llama 3 check, and the reliability CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex

import pytest

from cliutil import run_cli as run
from clusterplan.catalog import load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.reliability.analysis import largest_job
from clusterplan.reliability.failures import RecoverySettings, catalog, inputs_for, job_rates, per_unit_rates
from clusterplan.reliability.model import (
    ReliabilityInputs,
    closed_form,
    interval_cost,
    optimal_interval,
    wall_time,
    young_interval,
)
from clusterplan.specs import Plan

DAY = 86400.0
HOUR = 3600.0
MEMORY_FAST = RecoverySettings(checkpoint="memory", elastic=True, detection_s=30.0, restart_s=90.0)


def _inputs(rate_per_hour: float = 1.0, **fields: object) -> ReliabilityInputs:
    base = ReliabilityInputs(cause_rates={"accelerator": rate_per_hour / HOUR}, planned_rate=0.0, detection_s=60.0,
                             restart_s=300.0, restore_s=30.0, checkpoint_write_s=20.0, repair_s=4 * HOUR,
                             hardware_causes=frozenset({"accelerator"}))
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def _software(rate_per_hour: float, outage_s: float, checkpoint_s: float = 20.0, **fields: object) -> ReliabilityInputs:
    """One job-wide cause with a fixed outage: Daly's (2006) setting."""
    return ReliabilityInputs(cause_rates={"software": rate_per_hour / HOUR}, planned_rate=0.0, detection_s=0.0,
                             restart_s=outage_s, restore_s=0.0, checkpoint_write_s=checkpoint_s, repair_s=0.0,
                             **fields)  # type: ignore[arg-type]


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


def test_every_recovery_number_has_a_source() -> None:
    for name, entry in catalog()["recovery"].items():
        assert math.isfinite(float(entry["value"])), name
        assert len(entry["source"]) > 20, name
    assert {"spare_swap_s", "elastic_pause_s", "persist_interval_s", "memory_copies"} <= set(catalog()["recovery"])
    assert {cause["scope"] for cause in catalog()["causes"].values()} == {"node", "job"}


def test_wall_time_is_dalys_complete_model() -> None:
    """One cause, a fixed outage R, folded: Daly (2006) M e^(R/M) (e^((tau+C)/M) - 1) U / tau;
    not folded: the running time / (1 - lambda R)."""
    tau, work, outage, cost = 3600.0, 100 * 3600.0, 390.0, 20.0
    mtbf = HOUR
    inputs = _software(1.0, outage, cost)
    daly = mtbf * math.exp(outage / mtbf) * math.expm1((tau + cost) / mtbf) * work / tau
    assert wall_time(inputs, work, tau) == pytest.approx(daly, rel=1e-12)
    running = mtbf * math.expm1((tau + cost) / mtbf) * work / tau
    unfolded = dataclasses.replace(inputs, fold=False)
    assert wall_time(unfolded, work, tau) == pytest.approx(running / (1 - outage / mtbf), rel=1e-12)


@pytest.mark.parametrize("fold", [True, False])
def test_first_order_limit_is_young(fold: bool) -> None:
    """Rare failures: the exact mean approaches Young's (1974) first-order form."""
    inputs = _software(0.01, 300.0, 10.0, fold=fold)
    tau, work, lam = 1800.0, 30 * DAY, 0.01 / HOUR
    young = work * (1 + 10 / tau) / (1 - lam * (300 + (tau + 10) / 2))
    assert wall_time(inputs, work, tau) == pytest.approx(young, rel=2e-4)


def test_optimal_interval_is_near_young_and_beats_neighbours() -> None:
    inputs = _inputs(rate_per_hour=0.5)
    best = optimal_interval(inputs)
    assert best == pytest.approx(young_interval(inputs), rel=0.15)
    for factor in (0.5, 0.9, 1.1, 2.0):
        assert interval_cost(inputs, best) <= interval_cost(inputs, best * factor)
        assert wall_time(inputs, 30 * DAY, best) <= wall_time(inputs, 30 * DAY, best * factor) * (1 + 1e-9)


@pytest.mark.parametrize("rate_per_hour", [0.1, 1.0, 5.0, 10.0, 30.0])
@pytest.mark.parametrize("outage_s", [30.0, 300.0, 1200.0])
def test_folding_failures_into_a_restart_never_costs_more(rate_per_hour: float, outage_s: float) -> None:
    folded = closed_form(_software(rate_per_hour, outage_s), 10 * DAY)
    unfolded = closed_form(_software(rate_per_hour, outage_s, fold=False), 10 * DAY)
    assert folded.goodput >= unfolded.goodput
    assert folded.folded and not unfolded.folded
    assert math.isfinite(folded.wall_time_s) and folded.goodput > 0  # folded outages always end
    if rate_per_hour * outage_s / HOUR >= 1.0:
        assert math.isinf(unfolded.wall_time_s) and unfolded.goodput == 0.0


def test_a_job_that_fails_faster_than_it_recovers_is_outpaced_not_infinite() -> None:
    # 20 failures an hour, 6.5 min of outage each: rho = 2.2
    result = closed_form(_inputs(rate_per_hour=20.0, swap_s=0.0), HOUR)
    assert math.isfinite(result.wall_time_s)
    assert 0.0 < result.goodput < 0.15 and not result.outpaced
    worse = closed_form(_inputs(rate_per_hour=200.0), HOUR)
    assert worse.outpaced and worse.goodput < 0.01 and math.isfinite(worse.wall_time_s)
    never = closed_form(_inputs(rate_per_hour=20.0, fold=False), HOUR)
    assert math.isinf(never.wall_time_s) and never.goodput == 0.0


def test_recovery_modes_order() -> None:
    work = 100 * HOUR
    spares = closed_form(_inputs(swap_s=60.0), work).wall_time_s
    elastic_spares = closed_form(_inputs(swap_s=60.0, elastic=True, replicas=16), work).wall_time_s
    elastic_wait = closed_form(_inputs(replacement="wait", elastic=True, replicas=16), work).wall_time_s
    waiting = closed_form(_inputs(replacement="wait"), work).wall_time_s
    assert elastic_spares < spares < elastic_wait < waiting
    # elastic needs a second replica to go on without one
    alone = closed_form(_inputs(swap_s=60.0, elastic=True, replicas=1), work).wall_time_s
    assert alone == pytest.approx(spares, rel=1e-12)


def test_elastic_absorbs_node_failures_and_rolls_back_software_ones() -> None:
    inputs = inputs_for(load_model("llama3-405b"), load_system("trn2-ultraserver"), 262_144, 256, MEMORY_FAST, 1.0)
    assert inputs.rollback_rate == pytest.approx(inputs.cause_rates["software"])
    assert not inputs.absorbs("software") and inputs.absorbs("accelerator")
    # an absorbed failure costs detection + pause + half a step + the spare's swap over 256 replicas
    assert inputs.outage_s("accelerator") == pytest.approx(30.0 + 10.0 + 0.5 + 60.0 / 256)
    assert inputs.outage_s("software") == pytest.approx(30.0 + 90.0 + inputs.restore_s)


def test_no_failures_cost_nothing_but_checkpoints() -> None:
    inputs = _inputs(rate_per_hour=0.0)
    assert closed_form(inputs, 1000.0, interval_s=100.0).wall_time_s == pytest.approx(1000.0 * 1.2)


def test_interval_is_never_below_what_a_checkpoint_needs() -> None:
    model, system = load_model("llama3-405b"), load_system("trn2-ultraserver")
    for settings in (RecoverySettings(), RecoverySettings(checkpoint="async"), MEMORY_FAST):
        for chips, step in ((16_384, 5.0), (262_144, 1.1), (999_424, 1.1)):
            inputs = inputs_for(model, system, chips, chips // 1024, settings, step)
            estimate = closed_form(inputs, 10 * DAY)
            assert estimate.interval_s >= inputs.checkpoint_write_s
            assert estimate.interval_s >= inputs.min_interval_s and estimate.interval_s >= step
            assert estimate.interval_s >= estimate.interval_floor_s
            assert estimate.interval_clamped == (estimate.interval_optimum_s < estimate.interval_floor_s)
    # a write longer than Young's optimum: clamped to the write and said so
    slow = _inputs(rate_per_hour=10.0, checkpoint_write_s=1000.0)
    estimate = closed_form(slow, 10 * DAY)
    assert young_interval(slow) < 1000.0 and estimate.interval_s == 1000.0 and estimate.interval_clamped
    assert estimate.interval_floor_reason == "the blocking checkpoint write"
    with pytest.raises(SpecError, match="checkpoint-interval"):
        closed_form(slow, 10 * DAY, interval_s=999.0)
    stepped = closed_form(_inputs(rate_per_hour=1.0, checkpoint_write_s=0.0, step_s=7.0), DAY)
    assert stepped.interval_s == 7.0 and stepped.interval_floor_reason == "one training step"


def test_memory_checkpoints_beat_async_beat_sync_at_scale() -> None:
    model, system = load_model("llama3-405b"), load_system("trn2-ultraserver")
    sync = inputs_for(model, system, 65_536, settings=RecoverySettings(checkpoint="sync"))
    fast = inputs_for(model, system, 65_536, settings=RecoverySettings(checkpoint="async"))
    memory = inputs_for(model, system, 65_536, settings=RecoverySettings(checkpoint="memory"))
    assert fast.checkpoint_write_s < sync.checkpoint_write_s
    assert memory.restore_s < fast.restore_s
    goodputs = [closed_form(case, 30 * DAY).goodput for case in (sync, fast, memory)]
    assert goodputs == sorted(goodputs)
    # the persistent checkpoint is never faster than the storage takes
    slow = RecoverySettings(checkpoint="memory", persist_interval_s=1.0)
    from clusterplan.reliability.failures import checkpoint_costs

    costs = checkpoint_costs(model, system, 65_536, slow)
    assert costs.persist_interval_s == pytest.approx(costs.storage_s) and costs.persist_clamped


def _plan(chips: int, per: int = 1024) -> Plan:
    return Plan(tp=8, pp=16, cp=8, dp=chips // per, global_batch=16 * (chips // per), seq_len=8192)


@pytest.mark.parametrize("settings", [RecoverySettings(), MEMORY_FAST])
def test_largest_job_keeps_the_target_and_one_more_replica_does_not(settings: RecoverySettings) -> None:
    model, system = load_model("llama3-405b"), load_system("trn2-ultraserver")
    found = largest_job(model, system, _plan(262_144), 1.1, 10 * DAY, settings)
    assert found.chips is not None and found.goodput is not None and found.goodput >= 0.9
    replicas = found.chips // 1024
    inputs = inputs_for(model, system, (replicas + 1) * 1024, replicas + 1, settings, 1.1)
    assert closed_form(inputs, 10 * DAY).goodput < 0.9


def test_largest_job_shrinks_as_failures_grow() -> None:
    model, system = load_model("llama3-405b"), load_system("trn2-ultraserver")
    sizes = []
    for scale in (0.25, 0.5, 1.0, 2.0, 4.0):
        settings = dataclasses.replace(MEMORY_FAST, failure_scale=scale)
        sizes.append(largest_job(model, system, _plan(262_144), 1.1, 10 * DAY, settings).chips or 0)
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]


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
                "time_to_train_s", "largest_job_chips_goodput_90", "reproduce", "verdict"):
        assert key in record
    assert record["largest_job_chips_goodput_90"] % 128 == 0  # whole replicas of TP8 x PP16


def test_the_record_reproduces_itself(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["reliability", "--model", "llama3-70b", "--system", "trn2-ultraserver", "--chips", "4096", "--tp", "8",
            "--pp", "4", "--seq", "8192", "--global-batch", "1024", "--tokens", "2T", "--checkpoint", "memory",
            "--elastic", "--detection", "20s", "--restart", "1.5min", "--persist-interval", "30min",
            "--failure-scale", "3", "--json"]
    code, out, err = run(capsys, argv)
    assert code == 0, err
    record = json.loads(out)
    assert record["checkpoint"] == "memory" and record["elastic"] and record["persist_interval_s"] == 1800.0
    again = shlex.split(record["reproduce"])
    assert again[:2] == ["clusterplan", "reliability"]
    code, out, err = run(capsys, [*again[1:], "--json"])
    assert code == 0, err
    assert json.loads(out) == record


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
    (["--duration", "5d", "--checkpoint-interval", "1s"], "--checkpoint-interval"),  # below the 2.8 s write
    (["--duration", "5d", "--restart", "-3s"], "--restart"),
    (["--duration", "5d", "--swap", "-1s"], "--swap"),
    (["--duration", "5d", "--elastic-pause", "soon"], "--elastic-pause"),
    (["--duration", "5d", "--persist-interval", "1h"], "--persist-interval"),  # sync checkpoints
    (["--duration", "5d", "--checkpoint", "memory", "--persist-interval", "0s"], "--persist-interval"),
    (["--duration", "5d", "--failure-scale", "-1"], "--failure-scale"),
    (["--duration", "5d", "--trials", "-1"], "--trials"),
    (["--duration", "5d", "--trials", "10", "--seed", "-1"], "--seed"),
    (["--tokens", "1e30", "--trials", "1"], "--trials"),  # far beyond the Monte Carlo budget
    (["--duration", "100y", "--trials", "1000000"], "--trials"),
    (["--duration", "5d", "--tp", "8", "--pp", "8", "--elastic"], "--elastic"),
])
def test_reliability_refuses_bad_input(capsys: pytest.CaptureFixture[str], extra: list[str], needle: str) -> None:
    code, out, err = run(capsys, ["reliability", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64",
                                  *extra])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


def test_outpaced_jobs_say_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["reliability", "--model", "llama3-405b", "--system", "trn2-ultraserver", "--chips", "999424", "--tp", "8",
            "--pp", "16", "--cp", "8", "--global-batch", "15616", "--tokens", "15T", "--recovery", "wait"]
    code, out, err = run(capsys, [*argv, "--json"])
    assert code == 0, err
    record = json.loads(out)
    assert record["outpaced"] and record["goodput"] < 0.01
    assert record["verdict"].startswith("failures outpace recovery")
    code, out, err = run(capsys, argv)
    assert code == 0, err
    assert out.count("outpace") == 1 and "never" not in out and "with failures" not in out
    code, out, err = run(capsys, [*argv, "--trials", "10"])
    assert code == 2 and "--trials" in err and out == ""
