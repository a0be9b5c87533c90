"""Recompute left open is chosen to fit (training/recompute.py): a published plan ran, so the
planner answers for it as its recipe ran it, and says what it chose."""

from __future__ import annotations

import pytest

from cliutil import run_cli
from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.specs import Plan
from clusterplan.training.batch import PlanBatch
from clusterplan.training.recompute import escalations, least_recompute_that_fits
from clusterplan.training.step import estimate
from test_cli import strict_json

#: Megatron-Bridge's Llama 3 70B FP8 row on 64 GB200 (FSDP, micro-batch 2, 8k sequences): its
#: recipe offloads 40 layers' activations; at the default recompute it needs ~323 GiB of 173.
FSDP_70B = ["train", "--model", "llama3-70b", "--system", "dgx-gb200", "--chips", "64", "--tp", "1", "--pp", "1",
            "--zero", "3", "--micro-batch", "2", "--global-batch", "256", "--seq", "8192", "--precision", "fp8"]


def _plan(**fields: object) -> Plan:
    base: dict[str, object] = {"tp": 1, "pp": 1, "dp": 64, "zero": 3, "micro_batch": 2, "global_batch": 256,
                               "seq_len": 8192, "precision": "fp8"}
    return Plan.model_validate({**base, **fields})


def test_a_plan_whose_default_fits_keeps_it() -> None:
    model, hardware = load_model("llama3-8b"), hardware_for(load_system("dgx-h100"))
    plan = Plan(tp=1, pp=1, dp=8, global_batch=64, seq_len=4096)
    assert least_recompute_that_fits(model, hardware, plan) is None


def test_the_fastest_fitting_escalation_is_chosen() -> None:
    model, hardware = load_model("llama3-70b"), hardware_for(load_system("dgx-gb200"))
    plan = _plan()
    choice = least_recompute_that_fits(model, hardware, plan)
    assert choice is not None
    assert choice.default_memory_bytes > hardware.chip.hbm_bytes >= choice.memory_bytes
    # Every escalation timed: the chosen one fits and no fitting one is faster.
    candidates = escalations(model, plan)
    result = estimate(model, hardware, PlanBatch.from_plans(candidates, model))
    fitting = [float(t) for t, m in zip(result.step_time, result.memory, strict=True) if m <= hardware.chip.hbm_bytes]
    chosen = estimate(model, hardware, PlanBatch.from_plans([choice.plan], model))
    assert float(chosen.step_time[0]) == pytest.approx(min(fitting))
    # ... and it is cheaper than full recompute, the last resort.
    full = estimate(model, hardware, PlanBatch.from_plans([_plan(recompute="full")], model))
    assert float(chosen.step_time[0]) < float(full.step_time[0])


def test_escalations_keep_the_default_modules_and_respect_the_model() -> None:
    dense = escalations(load_model("llama3-70b"), _plan())
    assert all("core_attn" in p.recompute_modules for p in dense if p.recompute == "selective")
    assert dense[-1].recompute == "full"
    assert not any({"moe", "moe_act", "mla_up_proj"} & set(p.recompute_modules) for p in dense)
    moe = escalations(load_model("deepseek-v3"), _plan(ep=8))
    assert any("mla_up_proj" in p.recompute_modules for p in moe)
    assert not any("elementwise" in p.recompute_modules for p in moe)  # not modelled for MLA


def test_train_says_what_it_chose(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, [*FSDP_70B, "--json"])
    record = strict_json(out)
    assert code == 0 and record["fits_memory"]
    chosen = record["recompute_chosen"]
    assert chosen["chosen"] == "automatically"
    assert chosen["default_memory_bytes_per_chip"] > record["memory_capacity_bytes"]
    assert chosen["memory_bytes_per_chip"] == record["memory_bytes_per_chip"]
    assert record["plan"]["recompute"] == chosen["recompute"]
    code, out, _ = run_cli(capsys, FSDP_70B)
    assert code == 0 and "selective core_attn" in out and "automatically" in out


@pytest.mark.parametrize("given", [["--recompute", "selective"], ["--recompute-modules", "core_attn"]])
def test_a_recompute_the_user_gave_is_kept(capsys: pytest.CaptureFixture[str], given: list[str]) -> None:
    code, out, err = run_cli(capsys, [*FSDP_70B, *given, "--json"])
    record = strict_json(out)
    assert code == 1 and not record["fits_memory"] and "recompute_chosen" not in record
    assert "does not fit in memory" in err


def test_a_plan_nothing_can_fit_is_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, ["train", "--model", "llama3-70b", "--system", "dgx-h100", "--chips", "8",
                                    "--seq", "8192", "--global-batch", "64", "--json"])
    assert code == 1 and "recompute_chosen" not in strict_json(out)


def test_reliability_runs_the_plan_train_would(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["reliability", *FSDP_70B[1:], "--tokens", "1T", "--json"]
    code, out, _ = run_cli(capsys, args)
    record = strict_json(out)
    assert code == 0 and record["recompute_chosen"]["chosen"] == "automatically"
