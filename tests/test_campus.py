"""`clusterplan campus` (issue #16): the hourly campus simulation's invariants, policies,
resize costs, refusals and JSON schema. Most tests drive the vectorised simulation with a
hand-made sizing (fast, and every number known); one runs the built-in Rainier scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cliutil import run_cli
from clusterplan.campus.run import summarise
from clusterplan.campus.scenario import POLICIES, parse_section
from clusterplan.campus.simulate import PolicyRun, night_mask, simulate
from clusterplan.campus.sizing import ChipPower, Prices, ServingSizing, Sizing, TrainingLevel, TrainingSizing
from clusterplan.errors import SpecError

CAMPUS = 100_000
PRICE = np.full(24, 0.08)
CARBON = np.full(24, 0.4)


def _section(**changes: Any) -> Any:
    data: dict[str, Any] = {
        "serving": [{"model": "llama3-70b", "peak_demand": "40M", "growth_per_month": 0.05}],
        "training": [{"model": "llama3-70b", "seq_len": 8192, "global_batch": 1024}],
        "headroom": 0.1}
    data.update(changes)
    return parse_section(data)


def _sizing(levels: tuple[int, ...] = (8_192, 16_384, 32_768, 65_536)) -> Sizing:
    serving = ServingSizing("chat", "llama3-70b", "TP8", 64, 40_000.0, 2000, 500, 70e9, 1e15, 3.0, 0.06, 1)
    training = TrainingSizing("job", "llama3-70b", 15e12, 0, tuple(
        TrainingLevel(c, c, f"DP{c}", 300.0 * c, 2.0, 0.4, 0.8, 0.95, 90.0) for c in levels), 20.0, 20.0, 0.0)
    return Sizing((serving,), (training,), ChipPower(600.0, 400.0, 1.2), Prices(1.0), 64)


def _run(policy: str, envelope: float = float("inf"), days: int = 14, **changes: Any) -> PolicyRun:
    return simulate(policy, _section(**changes), _sizing(), CAMPUS, envelope, days * 24, PRICE, CARBON)


@pytest.mark.parametrize("policy", POLICIES)
def test_chips_are_conserved_every_hour(policy: str) -> None:
    run = _run(policy)
    total = run.serving_chips.sum(axis=0) + run.training_chips.sum(axis=0) + run.idle_chips
    assert np.all(total == CAMPUS)
    assert np.all(run.idle_chips >= 0) and np.all(run.training_chips >= 0)


@pytest.mark.parametrize("policy", POLICIES)
def test_power_envelope_is_respected(policy: str) -> None:
    free = _run(policy)
    training_dynamic = free.training_it_w - free.training_chips.sum(axis=0) * 600.0
    floor = float(((free.it_w - training_dynamic) * 1.2).max())  # idle campus + serving, at its peak
    envelope = floor + 0.5 * (float(free.facility_w.max()) - floor)  # binds in the busiest hours
    capped = _run(policy, envelope)
    assert np.all(capped.facility_w <= envelope * (1 + 1e-9))
    assert capped.training_chips.sum() < free.training_chips.sum()
    assert np.array_equal(capped.serving_chips, free.serving_chips)  # serving never yields to the cap


def test_serving_alone_over_the_envelope_is_refused() -> None:
    with pytest.raises(SpecError) as refused:
        _run("slo-aware", envelope=1e6)
    assert refused.value.field == "scenario.campus.power_w"


def test_slo_aware_never_serves_below_the_slo() -> None:
    run = _run("slo-aware")
    assert np.all(run.serving_chips >= run.required_chips)
    assert np.all(run.slo_attainment() == 1.0)
    # and it yields everything else: serving holds demand x (1 + headroom) in whole replicas
    reserve = np.ceil(run.demand * 1.1 / 40_000.0 - 1e-9) * 64
    assert np.array_equal(run.serving_chips, reserve.astype(np.int64))


def test_demand_beyond_the_campus_lowers_slo_attainment() -> None:
    run = _run("slo-aware", serving=[{"model": "llama3-70b", "peak_demand": "200M"}])
    assert run.slo_attainment().min() < 1.0
    assert np.all(run.serving_chips.sum(axis=0) <= CAMPUS)


def test_shared_trains_at_night_and_pauses_by_day() -> None:
    section = _section()
    run = simulate("shared", section, _sizing(), CAMPUS, float("inf"), 7 * 24, PRICE, CARBON)
    night = night_mask(section, 7 * 24)
    tokens = run.training_tokens.sum(axis=0)
    assert tokens[night].sum() > 0 and tokens[~night].sum() == 0
    summary = summarise(run, 1.0, night)
    assert summary.training_tokens_night > summary.training_tokens_day


def test_policies_compare_as_expected() -> None:
    runs = {p: _run(p) for p in POLICIES}
    tokens = {p: r.training_tokens.sum() for p, r in runs.items()}
    assert tokens["slo-aware"] > tokens["shared"] and tokens["slo-aware"] > tokens["dedicated"]
    dedicated = runs["dedicated"]
    assert np.all(dedicated.serving_chips == dedicated.serving_chips[:, :1])  # a fixed split
    assert dedicated.resizes.sum() == 0


def test_resize_cost_is_charged_on_size_changes() -> None:
    run = _run("slo-aware")
    held = run.training_chips[0]
    changed = np.flatnonzero(held[1:] != held[:-1]) + 1
    assert changed.size > 0 and run.resizes[0] == changed.size
    grow_or_shrink = [h for h in changed if held[h] > 0 and held[h - 1] > 0]
    assert grow_or_shrink
    for h in grow_or_shrink:  # checkpoint + restart + re-sharded restore
        assert run.resize_s[0, h] == pytest.approx(20.0 + 90.0 + 20.0)
        assert run.training_tokens[0, h] == pytest.approx(300.0 * held[h] * 0.95 * (3600.0 - 130.0))
    steady = [h for h in range(1, held.size) if held[h] == held[h - 1] and held[h] > 0
              and (h + 1 >= held.size or held[h + 1] > 0)]
    assert all(run.resize_s[0, h] == 0.0 for h in steady)
    assert all(run.training_tokens[0, h] == pytest.approx(300.0 * held[h] * 0.95 * 3600.0) for h in steady)


def test_pause_and_resume_are_charged() -> None:
    run = _run("shared")
    held = run.training_chips[0]
    paused = [h for h in range(1, held.size) if held[h] == 0 and held[h - 1] > 0]
    resumed = [h for h in range(1, held.size) if held[h] > 0 and held[h - 1] == 0]
    assert paused and resumed
    assert all(run.resize_s[0, h - 1] >= 20.0 for h in paused)  # the checkpoint before the pause
    assert all(run.resize_s[0, h] == pytest.approx(110.0) for h in resumed)  # restart + restore


def test_bad_section_is_one_spec_error() -> None:
    with pytest.raises(SpecError) as refused:
        _section(headroom=2.0)
    assert refused.value.field == "scenario.campus_simulation.headroom"
    with pytest.raises(SpecError) as refused:
        _section(serving=[{"model": "llama3-70b", "peak_demand": "1M", "diurnal": [1.0] * 23}])
    assert refused.value.field == "scenario.campus_simulation.serving[0].diurnal"
    with pytest.raises(SpecError) as refused:
        _section(bogus=1)
    assert refused.value.field == "scenario.campus_simulation.bogus"


@pytest.mark.parametrize(("argv", "field"), [
    (["campus", "rainier", "--policy", "fair"], "--policy"),
    (["campus", "rainier", "--days", "0"], "--days"),
    (["campus", "rainier", "--days", "3661"], "--days"),
    (["campus", "nowhere"], "scenario"),
])
def test_bad_input_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], field: str) -> None:
    code, out, err = run_cli(capsys, argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}")


def test_bad_scenario_section_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from importlib import resources

    data = yaml.safe_load((resources.files("clusterplan.catalog") / "scenarios/rainier.yaml").read_text("utf-8"))
    data["campus_simulation"]["night_start"] = 25
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    code, out, err = run_cli(capsys, ["campus", str(path), "--days", "1"])
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "scenario.campus_simulation.night_start" in err and "25" in err


HOURLY_FIELDS = {"hour", "serving_chips", "training_chips", "idle_chips", "it_mw", "facility_mw", "training_tokens",
                 "slo_attainment"}


@pytest.fixture(scope="module")
def rainier_week() -> dict[str, Any]:
    from clusterplan.campus.run import campus_result

    return json.loads(json.dumps(campus_result("rainier", 7, "all").record()))


def test_rainier_week_json_schema(rainier_week: dict[str, Any]) -> None:
    record = rainier_week
    assert len(record["hourly"]) == 168
    envelope = record["power_envelope_mw"]
    for hour in record["hourly"]:
        assert set(hour) >= HOURLY_FIELDS
        assert hour["serving_chips"] + hour["training_chips"] + hour["idle_chips"] == record["campus_chips"]
        assert hour["facility_mw"] <= envelope
        assert 0.0 <= hour["slo_attainment"] <= 1.0
    names = [p["policy"] for p in record["policies"]]
    assert {"shared", "dedicated"} <= set(names)
    for policy in record["policies"]:
        assert len(policy["hourly"]) == 168 and len(policy["daily"]) == 7
        assert {"training_tokens_per_day", "slo_attainment", "idle_chip_hours", "energy_mwh",
                "usd_per_million_served_tokens", "usd_per_billion_trained_tokens"} <= set(policy["summary"])
    assert [c["policy"] for c in record["comparison"]] == names
    shared = record["policies"][names.index("shared")]["summary"]
    assert shared["training_tokens_night"] > shared["training_tokens_day"]


def test_campus_cli_json_and_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, ["campus", "rainier", "--days", "1", "--policy", "shared", "--json",
                                      "--report-dir", str(tmp_path)])
    assert code == 0, err
    record = json.loads(out)
    assert len(record["hourly"]) == 24 and [p["policy"] for p in record["policies"]] == ["shared"]
    assert Path(record["report"]["html"]).is_file() and Path(record["report"]["markdown"]).is_file()
    code, out, err = run_cli(capsys, ["campus", "--days", "1", "--policy", "dedicated"])
    assert code == 0, err
    assert "a day in the life: dedicated" in out
    assert max(len(line) for line in out.splitlines()) <= 80


def test_power_and_activity_match_the_models_they_vectorise() -> None:
    from clusterplan.campus.simulate import serving_activity
    from clusterplan.campus.sizing import chip_power
    from clusterplan.catalog import hardware_for, load_economics, load_model, load_system
    from clusterplan.costs.power import cluster_power
    from clusterplan.inference.capacity import serving_activity as reference
    from clusterplan.inference.step import Deployment, ReplicaModel

    hardware = hardware_for(load_system("trn2-ultraserver"))
    power = chip_power(hardware)
    chips = 64 * 1000
    exact = cluster_power(hardware.system, hardware.chip, chips, 0.7, load_economics())
    assert chips * (power.base_w + 0.7 * power.dynamic_w) == pytest.approx(exact.it_w, rel=1e-9)
    assert power.pue * exact.it_w == pytest.approx(exact.facility_w)
    model = load_model("llama3-70b")
    replica = ReplicaModel(model, hardware, Deployment(tp=16, weights="fp8", kv_cache="fp8"))
    serving = ServingSizing("chat", model.name, "TP16", 16, 5000.0, 2000, 500, float(model.active_params),
                            float(replica.peak_flops_per_chip), 3.0, 0.06, 1)
    sizing = Sizing((serving,), (), power, Prices(1.0), 64)
    served = np.array([[1000.0 * 10]])  # 10 replicas at 1,000 output tok/s each
    mine = serving_activity(sizing, served, np.array([[160]]))
    assert mine[0, 0] == pytest.approx(reference(replica, 1000.0, 4000.0))


def test_scenario_and_campus_training_jobs_share_one_spec() -> None:
    """specs/scenario.py: the Rainier scenario's and the campus section's training jobs extend one
    base, its fields first (the order a refusal lists the known keys in)."""
    from clusterplan.specs.scenario import CampusTrainingJob, ScenarioTrainingJob, TrainingJob

    shared = list(TrainingJob.model_fields)
    assert shared == ["label", "model", "tokens", "seq_len", "global_batch", "precisions"]
    for job in (CampusTrainingJob, ScenarioTrainingJob):
        assert issubclass(job, TrainingJob) and list(job.model_fields)[:len(shared)] == shared
