"""Issue #14 part 3, "search for what planners ask": deadline, budget and chip cap; whole
scale-up domains (``--any-shape`` to relax); every ranked plan's ``command`` reproduces it."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from rich.console import Console

from cliutil import run_cli
from clusterplan import cli, units
from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.specs import Plan
from clusterplan.training.command import TrainTarget, format_tokens, plan_flag, train_command, wrap_command
from clusterplan.training.search import (
    Constraints,
    SearchSpace,
    _batch,
    enumerate_layouts,
    enumerate_plans,
    search,
)
from clusterplan.training.step import estimate
from test_cli import assert_refused, strict_json

DAY = 86400.0
L8 = ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--seq", "8192", "--global-batch", "512",
      "--tokens", "1T"]


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:  # type: ignore[type-arg]
    code, out, err = run_cli(capsys, [*argv, "--json"])
    assert code == 0, err
    assert err == ""
    record = strict_json(out)
    assert isinstance(record, dict)
    return record


def rerun(capsys: pytest.CaptureFixture[str], command: str) -> dict:  # type: ignore[type-arg]
    """Run a printed ``clusterplan train ...`` command through the CLI, as a user would."""
    words = shlex.split(command)
    assert words[:2] == ["clusterplan", "train"]
    return run_json(capsys, words[1:])


# ---- the API: constraints are masks; the optimum under them is the exhaustive one --------------

def _exhaustive(model_name: str, system: str, chips: int, seq: int, batch: int, tokens: float,
                space: SearchSpace, fraction: float = 0.9) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """Time every plan of the space with no pruning: step, chips, time to train, fits."""
    model, hw = load_model(model_name), hardware_for(load_system(system))
    columns = enumerate_plans(model, chips, seq, batch, space, hw.system.scale_up_size)
    result = estimate(model, hw, _batch(model, columns, seq, batch, space))
    used = (columns["tp"] * columns["pp"] * columns["cp"] * columns["dp"]).astype(float)
    return {"step": result.step_time, "chips": used, "fits": result.memory <= hw.chip.hbm_bytes * fraction,
            "days": tokens / (result.tokens_per_s_per_chip * used) / DAY}


def test_deadline_ranks_only_plans_on_time_and_finds_the_cheapest_of_them() -> None:
    model, hw = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    space = SearchSpace(chips_at_most=True)
    free = search(model, hw, 256, 8192, 512, space, objective="cost", top=1, tokens=1e12).best[0]
    deadline = free["time_to_train_s"] / 2  # the cheapest plan overall misses it
    found = search(model, hw, 256, 8192, 512, space, objective="cost", top=5, tokens=1e12,
                   constraints=Constraints(deadline_s=deadline))
    assert found.best and found.unmet == ""
    assert all(r["time_to_train_s"] <= deadline for r in found.best)
    every = _exhaustive("llama3-8b", "dgx-h100", 256, 8192, 512, 1e12, space)
    on_time = every["fits"] & (every["days"] * DAY <= deadline)
    cheapest = float(np.min(np.where(on_time, every["step"] * every["chips"], np.inf)))
    assert found.best[0]["step_time_s"] * found.best[0]["chips"] == pytest.approx(cheapest, rel=1e-9)
    assert 0 < found.plans_meeting_constraints < found.plans_timed


def test_budget_ranks_only_plans_within_it_by_the_cost_train_reports() -> None:
    model, hw = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    space = SearchSpace(chips_at_most=True)
    ranked = search(model, hw, 256, 8192, 512, space, top=40, tokens=1e12).best  # fastest first
    costs = sorted({r["cost_usd"] for r in ranked})
    budget = costs[len(costs) // 2]
    expected = next(r for r in ranked if r["cost_usd"] <= budget)  # the fastest within the budget
    found = search(model, hw, 256, 8192, 512, space, top=5, tokens=1e12, constraints=Constraints(budget_usd=budget))
    assert found.best and all(r["cost_usd"] <= budget * (1 + 1e-12) for r in found.best)
    assert found.best[0]["step_time_s"] == pytest.approx(expected["step_time_s"], rel=1e-12)


def test_max_chips_caps_the_plans_and_an_exact_count_above_it_is_unmet() -> None:
    model, hw = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    found = search(model, hw, 1024, 8192, 512, SearchSpace(chips_at_most=True), top=10,
                   constraints=Constraints(max_chips=96))
    assert found.best and all(r["chips"] <= 96 for r in found.best)
    assert max(r["chips"] for r in found.best) == 96  # 12 nodes, the most the cap allows
    over = search(model, hw, 128, 8192, 512, top=1, constraints=Constraints(max_chips=64))
    assert over.best == [] and "exactly 128 chips" in over.unmet


def test_no_plan_on_time_says_which_plan_came_closest() -> None:
    model, hw = load_model("llama3-70b"), hardware_for(load_system("dgx-h100"))
    found = search(model, hw, 64, 8192, 256, SearchSpace(chips_at_most=True), top=3, tokens=15e12,
                   constraints=Constraints(deadline_s=7 * DAY, budget_usd=1e9))
    assert found.best == [] and found.plans_fitting > 0
    fastest = found.nearest["fastest"]
    assert fastest["time_to_train_s"] > 7 * DAY
    assert "within 7.0 days" in found.unmet and f"{fastest['chips']:,} chips" in found.unmet
    assert f"{fastest['time_to_train_s'] / DAY:.1f} days" in found.unmet


def test_a_limit_inside_or_below_the_best_plans_band_is_named_at_risk() -> None:
    """The constraints rank by the point estimate; the band (cross-validated errors) says whether
    the limit holds at the model's measured error: inside the band it may be missed, below its
    low end it is missed at every error the band covers, above its high end it is safe."""
    record = {"bands": {"time_to_train_s": [80 * DAY, 100 * DAY], "cost_usd": [10e6, 12e6]}}
    inside = Constraints(deadline_s=90 * DAY, budget_usd=50e6).at_risk(record)
    assert inside == ["the deadline of 90.0 days: the plan's range (80.0 days to 100.0 days) straddles it; "
                      "it may be missed"]
    below = Constraints(deadline_s=200 * DAY, budget_usd=9e6).at_risk(record)
    assert below == ["the budget of $9.0M: the plan's range ($10.0M to $12.0M) lies beyond it; missed at every "
                     "cross-validated error"]
    assert Constraints(deadline_s=100 * DAY, budget_usd=12e6).at_risk(record) == []
    assert Constraints(deadline_s=DAY).at_risk({}) == []  # no band, no verdict
    assert Constraints().at_risk(record) == []


def test_the_search_record_and_cli_name_the_limits_at_risk(capsys: pytest.CaptureFixture[str]) -> None:
    """A deadline the best plan meets at its estimate but not at the top of its band."""
    model, hw = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    free = search(model, hw, 64, 8192, 512, top=1, tokens=1e12).best[0]
    low, high = free["bands"]["time_to_train_s"]
    assert low < high
    deadline = (max(low, free["time_to_train_s"]) + high) / 2
    days = f"{deadline / DAY:.6f}d"
    record = run_json(capsys, ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64", "--seq",
                               "8192", "--global-batch", "512", "--tokens", "1T", "--deadline", days, "--top", "1"])
    assert len(record["at_risk"]) == 1 and record["at_risk"][0].startswith("the deadline of ")
    assert "it may be missed" in record["at_risk"][0]
    code, out, _ = run_cli(capsys, ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64",
                                    "--seq", "8192", "--global-batch", "512", "--tokens", "1T", "--deadline", days,
                                    "--top", "1"])
    assert code == 0 and "at risk: the deadline of " in out.replace("\n", " ")
    safe = run_json(capsys, ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64", "--seq",
                             "8192", "--global-batch", "512", "--tokens", "1T", "--deadline", f"{2 * high / DAY}d",
                             "--top", "1"])
    assert safe["at_risk"] == []


def test_constraints_need_tokens_and_positive_values() -> None:
    model, hw = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    with pytest.raises(SpecError, match="--tokens"):
        search(model, hw, 8, 4096, 8, constraints=Constraints(deadline_s=DAY))
    with pytest.raises(SpecError, match="--budget"):
        search(model, hw, 8, 4096, 8, tokens=1e9, constraints=Constraints(budget_usd=-1.0))


# ---- whole scale-up domains -------------------------------------------------------------------

@pytest.mark.parametrize(("system", "domain"), [("dgx-h100", 8), ("trn2-ultraserver", 64), ("tpu-v5e", 256)])
def test_plans_fill_whole_scale_up_domains_and_tp_divides_one(system: str, domain: int) -> None:
    hw = hardware_for(load_system(system))
    assert hw.system.scale_up_size == domain
    model = load_model("llama3-70b")
    layouts = enumerate_layouts(model, 3000, 8192, 1024, SearchSpace(chips_at_most=True, max_tp=64), domain)
    used = layouts["tp"] * layouts["pp"] * layouts["cp"] * layouts["dp"]
    assert used.size and np.all(used % domain == 0) and np.all(domain % layouts["tp"] == 0)
    loose = enumerate_layouts(model, 3000, 8192, 1024, SearchSpace(chips_at_most=True, max_tp=64))
    loose_used = loose["tp"] * loose["pp"] * loose["cp"] * loose["dp"]
    assert np.any(loose_used % domain != 0)  # what --any-shape adds
    assert loose["tp"].max() == 64 and layouts["tp"].max() == min(domain, 64)  # llama3-70b: 64 heads


def test_tpu_cubes_and_nvl72_segments_are_sourced_64_chip_units(capsys: pytest.CaptureFixture[str]) -> None:
    for name, word in (("tpu-v4", "cube"), ("tpu-v5p", "cube"), ("gb200-nvl72", "segment"),
                       ("gb300-nvl72", "segment")):
        system = load_system(name)
        assert system.allocation_size == 64 < system.scale_up_size
        assert word in system.allocation_source and len(system.allocation_source) >= 20
    for name in ("dgx-h100", "trn2-ultraserver", "trn2", "tpu-v5e"):
        system = load_system(name)
        assert system.allocation_chips is None and system.allocation_size == system.scale_up_size
    found = run_json(capsys, ["search", "--model", "llama3-70b", "--system", "tpu-v5p", "--max-chips", "1000",
                              "--seq", "8192", "--global-batch", "512", "--top", "5"])
    assert found["allocation_unit_chips"] == 64
    assert all(r["chips"] % 64 == 0 and 64 % r["plan"]["tp"] == 0 for r in found["best"])


def test_allocation_chips_must_be_whole_nodes_in_a_domain_and_sourced() -> None:
    from pydantic import ValidationError

    data = load_system("tpu-v5p").model_dump()
    with pytest.raises(ValidationError, match="whole nodes"):
        type(load_system("tpu-v5p"))(**{**data, "allocation_chips": 66})  # not whole 4-chip hosts
    with pytest.raises(ValidationError, match="inside one scale-up domain"):
        type(load_system("tpu-v5p"))(**{**data, "allocation_chips": 8192})
    with pytest.raises(ValidationError, match="allocation_source"):
        type(load_system("tpu-v5p"))(**{**data, "allocation_source": ""})


def test_search_records_say_how_many_domains() -> None:
    model, hw = load_model("llama3-8b"), hardware_for(load_system("trn2-ultraserver"))
    found = search(model, hw, 1000, 8192, 512, SearchSpace(chips_at_most=True), top=5)
    assert found.allocation_unit_chips == 64
    for record in found.best:
        assert record["chips"] % 64 == 0 and record["allocation_units"] == record["chips"] // 64


def test_cli_refuses_chips_in_part_domains_unless_any_shape(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "12", "--seq", "4096",
            "--global-batch", "12"]
    assert_refused(*run_cli(capsys, argv), "--chips=12", "scale-up domains of 8 chips", "--any-shape")
    found = run_json(capsys, [*argv, "--any-shape", "--top", "3"])
    assert found["best"] and all(r["chips"] == 12 for r in found["best"])
    assert_refused(*run_cli(capsys, [*argv[:5], "--max-chips", "4", *argv[7:]]), "--max-chips=4",
                   "at least one scale-up domain")
    assert_refused(*run_cli(capsys, [*argv, "--up-to", "--max-chips", "4"]), "--max-chips=4")
    nvl72 = ["search", "--model", "llama3-8b", "--system", "gb200-nvl72", "--chips", "72", "--seq", "4096",
             "--global-batch", "8"]
    assert_refused(*run_cli(capsys, nvl72), "--chips=72", "allocation units of 64 chips", "scale-up domain has 72")


def test_cli_any_shape_reaches_tp_across_domains(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "--model", "llama3-70b", "--system", "dgx-h100", "--chips", "64", "--seq", "4096",
            "--global-batch", "64", "--precision", "bf16", "--recompute", "full", "--zero", "3", "--top", "1000"]
    default = {r["plan"]["tp"] for r in run_json(capsys, argv)["best"]}
    anyshape = {r["plan"]["tp"] for r in run_json(capsys, [*argv, "--any-shape"])["best"]}
    assert default <= {1, 2, 4, 8} and 16 in anyshape


# ---- the command: printed plans rerun exactly -------------------------------------------------

def test_plan_flags_are_the_cli_options() -> None:
    for field in Plan.model_fields:
        assert plan_flag(field) == cli.flag(field), field
    import typer.main

    train = typer.main.get_command(cli.app).commands["train"]  # type: ignore[attr-defined]
    options = {opt for param in train.params for opt in [*param.opts, *param.secondary_opts]}
    for field, info in Plan.model_fields.items():
        assert plan_flag(field) in options, field
        if info.annotation in (bool, "bool") and field != "ep_within_scale_up":
            assert "--no-" + plan_flag(field)[2:] in options, field


def test_tokens_print_back_exactly() -> None:
    for tokens in (15e12, 1e12, 2.5e9, 123456789.0, 1e3, 7.0):
        assert units.parse_count(format_tokens(tokens)) == tokens
    assert format_tokens(15e12) == "15T"


@pytest.mark.parametrize("argv", [
    # uneven split with interleaving, CP, fp8 with fp8 weights, non-default framework settings
    ["search", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", "16384", "--seq", "8192",
     "--global-batch", "2048", "--precision", "bf16,fp8", "--fp8-params", "--overlap-tp", "--grad-reduce",
     "fp32", "--tokens", "15T"],
    # a cost ranking on up to 512 Trn2 chips with selective recompute modules
    ["search", "--model", "llama3-70b", "--system", "trn2-ultraserver", "--max-chips", "512", "--seq", "4096",
     "--global-batch", "256", "--objective", "cost", "--recompute", "selective,full",
     "--recompute-modules", "core_attn,layernorm", "--no-overlap-pp"],
    # MoE: EP and the routing settings
    ["search", "--model", "mixtral-8x22b", "--system", "dgx-h100", "--chips", "128", "--seq", "4096",
     "--global-batch", "256", "--routing-gini", "0.1", "--overlap-ep"],
])
def test_top_commands_reproduce_their_step_time(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    found = run_json(capsys, [*argv, "--top", "4"])
    assert found["best"]
    for best in found["best"]:
        again = rerun(capsys, best["command"])
        assert again["plan"] == best["plan"]
        assert again["step_time_s"] == pytest.approx(best["step_time_s"], rel=1e-9)
        assert again["memory_bytes_per_chip"] == pytest.approx(best["memory_bytes_per_chip"], rel=1e-9)
        if "time_to_train_s" in best:
            assert again["time_to_train_s"] == pytest.approx(best["time_to_train_s"], rel=1e-9)


def test_the_command_names_what_the_user_gave(capsys: pytest.CaptureFixture[str]) -> None:
    found = run_json(capsys, ["search", "--model", "llama3-8b", "--system", "dgx-h100-80gb", "--chips", "8",
                              "--seq", "4096", "--global-batch", "8", "--chip", "h200", "--top", "1"])
    command = shlex.split(found["best"][0]["command"])
    assert command[command.index("--system") + 1] == "dgx-h100-80gb"
    assert command[command.index("--chip") + 1] == "h200"
    assert rerun(capsys, found["best"][0]["command"])["chip"] == found["best"][0]["chip"]


def test_api_command_uses_catalog_names() -> None:
    model, hw = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    plan = Plan(tp=2, pp=4, vp=2, dp=1, seq_len=4096, global_batch=8, first_stage_layers=7, last_stage_layers=9)
    command = train_command(TrainTarget.of(model, hw), plan, 2.5e12)
    assert command.startswith("clusterplan train --model llama3-8b --system dgx-h100 --chips 8 ")
    for pair in ("--pp 4 --vp 2 --first-stage-layers 7 --last-stage-layers 9", "--tokens 2.5T"):
        assert pair in command


def test_wrapped_command_fits_80_columns_and_is_the_same_command() -> None:
    plan = Plan(tp=8, pp=16, vp=8, cp=8, dp=256, seq_len=8192, global_batch=4096, first_stage_layers=7,
                last_stage_layers=7, precision="fp8", zero=2, recompute="none")
    command = train_command(TrainTarget("llama3-405b", "trn2-ultraserver"), plan, 15e12)
    lines = wrap_command(command, 80)
    assert len(lines) > 1 and max(len(line) for line in lines) <= 80
    assert all(line.endswith(" \\") for line in lines[:-1])
    assert shlex.split(" ".join(line.removesuffix("\\") for line in lines)) == shlex.split(command)


# ---- the CLI: options, refusals, exit 1 -------------------------------------------------------

@pytest.mark.parametrize(("extra", "needles"), [
    (["--deadline", "-3d"], ("--deadline='-3d'", "duration > 0", "h, d, w or y")),
    (["--deadline", "90"], ("--deadline='90'", "with a unit")),
    (["--deadline", "soon"], ("--deadline='soon'", "duration")),
    (["--budget", "abc"], ("--budget='abc'", "US dollars > 0")),
    (["--budget", "-5M"], ("--budget='-5M'", "US dollars > 0")),
    (["--max-chips", "0"], ("--max-chips=0", "between 1")),
])
def test_bad_constraint_values_are_one_line(capsys: pytest.CaptureFixture[str], extra: list[str],
                                            needles: tuple[str, ...]) -> None:
    assert_refused(*run_cli(capsys, [*L8, "--chips", "64", *extra]), *needles)


def test_deadline_and_budget_need_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a for a in L8 if a not in ("--tokens", "1T")]
    assert_refused(*run_cli(capsys, [*argv, "--chips", "64", "--deadline", "90d"]), "--deadline", "--tokens")
    assert_refused(*run_cli(capsys, [*argv, "--chips", "64", "--budget", "5M"]), "--budget", "--tokens")
    assert_refused(*run_cli(capsys, argv), "--chips", "--max-chips")


def test_budget_needs_a_priced_system(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    import yaml

    path = f"{tmp_path}/unpriced.yaml"
    system = load_system("dgx-h100").model_dump(mode="json")
    system.update(name="unpriced-h100", aliases=[])
    with open(path, "w", encoding="utf-8") as stream:
        yaml.safe_dump(system, stream)
    argv = ["search", "--model", "llama3-8b", "--system", path, "--chips", "8", "--seq", "4096",
            "--global-batch", "8", "--tokens", "1T"]
    assert run_json(capsys, [*argv, "--deadline", "1y", "--top", "1"])["best"]  # a deadline needs no price
    assert_refused(*run_cli(capsys, [*argv, "--budget", "1M"]), "--budget", "economics.yaml")


def test_cli_constraints_filter_and_show_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    found = run_json(capsys, [*L8, "--max-chips", "256", "--deadline", "10d", "--budget", "50k",
                              "--objective", "cost", "--top", "5"])
    assert found["constraints"] == {"deadline_s": 10 * DAY, "budget_usd": 5e4, "max_chips": 256}
    assert found["best"] and found["plans_meeting_constraints"] >= len(found["best"])
    for record in found["best"]:
        assert record["time_to_train_s"] <= 10 * DAY and record["cost_usd"] <= 5e4 and record["chips"] <= 256


def test_no_plan_meeting_the_constraints_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["search", "--model", "llama3-405b", "--system", "dgx-h100", "--max-chips", "2048", "--seq", "8192",
            "--global-batch", "2048", "--tokens", "15T", "--deadline", "90d"]
    code, out, err = run_cli(capsys, argv)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("no plan trains 15T tokens within 90.0 days on at most 2,048")
    assert "the fastest that fits" in lines[0] and "Traceback" not in err
    code, out, err = run_cli(capsys, [*argv, "--json"])
    assert code == 1 and err.startswith("no plan trains")
    record = strict_json(out)
    assert record["best"] == [] and record["unmet"] == err.strip()
    assert record["nearest"]["fastest"]["time_to_train_s"] > 90 * DAY
    assert record["nearest"]["fastest"]["chips"] <= 2048


def test_terminal_shows_the_constraints_and_the_command_at_80_columns(capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli._common, "console", Console(width=80))
    argv = [*L8, "--max-chips", "256", "--deadline", "10d", "--top", "3"]
    best = run_json(capsys, argv)["best"][0]
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "constraints: deadline 10.0 days, at most 256 chips" in out
    start = out.index("rerun the best plan:")
    printed = out[start:].splitlines()[1:]
    joined = " ".join(line.removesuffix("\\") for line in printed)
    assert shlex.split(joined) == shlex.split(best["command"])


# ---- issue #14's own case: 405B, 15T tokens, 90 days, H100 and Trn2 UltraServers -------------

@pytest.mark.parametrize(("system", "chips", "domain"), [("dgx-h100", "16384", 8),
                                                         ("trn2-ultraserver", "500000", 64)])
def test_405b_in_90_days_whole_domains_with_reproducing_commands(capsys: pytest.CaptureFixture[str], system: str,
                                                                chips: str, domain: int) -> None:
    found = run_json(capsys, ["search", "--model", "llama3-405b", "--system", system, "--max-chips", chips,
                              "--seq", "8192", "--global-batch", "2048", "--precision", "bf16,fp8", "--tokens", "15T",
                              "--deadline", "90d", "--objective", "cost", "--top", "3"])
    assert found["best"] and found["allocation_unit_chips"] == domain
    for record in found["best"]:
        assert record["time_to_train_s"] <= 90 * DAY
        assert record["chips"] % domain == 0 and domain % record["plan"]["tp"] == 0
        assert record["command"].startswith(f"clusterplan train --model llama3-405b --system {system} ")
    top = found["best"][0]
    assert rerun(capsys, top["command"])["step_time_s"] == pytest.approx(top["step_time_s"], rel=1e-9)


# ---- the Rainier report prints plans that rerun --------------------------------------------------

def test_rainier_plans_print_as_commands_that_rerun(capsys: pytest.CaptureFixture[str], tmp_path: object,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    scenario = directory / "small.yaml"
    scenario.write_text(
        "name: small\nsystem: dgx-h100\nchips: 256\n"
        "training: {model: llama3-70b, tokens: 1T, seq_len: 8192, global_batch: 512, precisions: [bf16, fp8],"
        " objective: time, deadline: 30d}\n", encoding="utf-8")
    record = run_json(capsys, ["rainier", "--scenario", str(scenario), "--report-dir", str(directory)])
    training, cheap = record["training"], record["training_fewest_chip_hours"]
    assert cheap["time_to_train_s"] <= 30 * DAY
    # The plan is chosen on its point estimate; its band's verdict on the deadline rides with it.
    assert cheap["at_risk"] == Constraints(deadline_s=30 * DAY).at_risk(cheap)
    assert bool(cheap["at_risk"]) == (cheap["bands"]["time_to_train_s"][1] > 30 * DAY)
    markdown = (directory / "rainier.md").read_text(encoding="utf-8")
    assert training["command"] in markdown and cheap["command"] in markdown
    assert "<pre><code>" in (directory / "rainier.html").read_text(encoding="utf-8")
    monkeypatch.setattr(cli._common, "console", Console(width=80))
    code, out, err = run_cli(capsys, ["rainier", "--scenario", str(scenario), "--report-dir", str(directory)])
    assert code == 0, err
    lines = out.splitlines()
    start = lines.index("rerun this plan:") + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\")) + 1
    printed = " ".join(line.removesuffix("\\") for line in lines[start:end])
    assert shlex.split(printed) == shlex.split(training["command"])
    again = rerun(capsys, training["command"])
    assert again["step_time_s"] == pytest.approx(training["step_time_s"], rel=1e-9)


def test_json_contract_is_strict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, [*L8, "--chips", "64", "--top", "2", "--json"])
    assert code == 0
    record = json.loads(out)
    assert record["constraints"] == {"deadline_s": None, "budget_usd": None, "max_chips": None}
    assert "unmet" not in record and all("command" in r for r in record["best"])


def test_sweep_files_choose_whole_domains_or_any_shape(tmp_path: object) -> None:
    from pathlib import Path

    import yaml

    from clusterplan.distributed import LocalExecutor
    from clusterplan.sweep import load_sweep, run_sweep

    rows = {}
    for any_shape in (False, True):
        path = Path(f"{tmp_path}/sweep-{any_shape}.yaml")
        with open(path, "w", encoding="utf-8") as stream:
            yaml.safe_dump({"models": ["llama3-8b"], "systems": ["trn2-ultraserver"], "chips": [96],
                            "seq_len": [4096], "global_batch": [96], "any_shape": any_shape}, stream)
        rows[any_shape] = run_sweep(load_sweep(path), LocalExecutor(workers=1))[0]
    assert rows[False]["status"] == "no plan" and rows[False]["any_shape"] is False  # 96 = 1.5 UltraServers
    assert rows[True]["status"] == "ok" and rows[True]["chips_used"] == 96 and rows[True]["any_shape"] is True
