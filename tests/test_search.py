"""Plan search: exact pruning against exhaustive evaluation, coverage, consistency, quality."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.specs import Model
from clusterplan.training.batch import PlanBatch
from clusterplan.training.search import SearchSpace, _batch, enumerate_plans, search
from clusterplan.training.step import Hardware, estimate
from clusterplan.training.summary import train_record
from clusterplan.validation.cases import all_cases


def _exhaustive_best(model: Model, hw: Hardware, chips: int, seq: int, batch: int, space: SearchSpace,
                     fraction: float) -> float:
    """Time every enumerated plan, no pruning at all; the fastest that fits."""
    columns = enumerate_plans(model, chips, seq, batch, space)
    result = estimate(model, hw, _batch(model, columns, seq, batch, space))
    feasible = result.memory <= hw.chip.hbm_bytes * fraction
    return float(np.min(np.where(feasible, result.step_time, np.inf)))


CASES = [
    ("llama3-8b", "dgx-h100", 64, 8192, 256, 0.9),
    ("llama3-70b", "dgx-h100", 128, 4096, 256, 0.9),
    ("llama2-13b", "trn2", 32, 4096, 64, 0.5),
    ("korthikanti-22b", "dgx-a100", 8, 2048, 4, 0.9),
    ("llama3-70b", "dgx-h100", 64, 8192, 64, 0.6),  # tight memory: recompute matters
]


@pytest.mark.parametrize(("model_name", "system", "chips", "seq", "batch", "fraction"), CASES)
def test_pruned_search_finds_the_exhaustive_optimum(model_name: str, system: str, chips: int, seq: int,
                                                    batch: int, fraction: float) -> None:
    model = load_model(model_name)
    hw = hardware_for(load_system(system))
    space = SearchSpace(precisions=("bf16", "fp8"))
    pruned = search(model, hw, chips, seq, batch, space, max_memory_fraction=fraction, top=1)
    expected = _exhaustive_best(model, hw, chips, seq, batch, space, fraction)
    assert pruned.best, "a feasible plan exists"
    assert pruned.best[0]["step_time_s"] == pytest.approx(expected, rel=1e-9)
    assert pruned.plans_timed <= pruned.plans_fitting <= pruned.plans_enumerated


def test_pruning_skips_work_and_unpruned_search_agrees() -> None:
    model = load_model("llama3-70b")
    hw = hardware_for(load_system("dgx-h100"))
    pruned = search(model, hw, 128, 4096, 256, top=3)
    unpruned = search(model, hw, 128, 4096, 256, top=3, prune=False)
    assert pruned.plans_timed < unpruned.plans_timed
    assert [r["step_time_s"] for r in pruned.best] == pytest.approx([r["step_time_s"] for r in unpruned.best])


def test_every_enumerated_plan_is_valid_and_uses_the_chips() -> None:
    model = load_model("llama3-405b")
    space = SearchSpace()
    columns = enumerate_plans(model, 1024, 8192, 512, space)
    rng = np.random.default_rng(0)
    picks = rng.choice(columns["tp"].size, size=200, replace=False)
    from clusterplan.training.search import _to_plan

    for i in picks:
        plan = _to_plan(columns, int(i), 8192, 512, space)
        plan.validate_for(model, 1024)  # raises if invalid
    chips = columns["tp"] * columns["pp"] * columns["cp"] * columns["dp"]
    assert np.all(chips == 1024)


def test_up_to_mode_never_exceeds_the_chips_and_divides_the_batch() -> None:
    model = load_model("llama3-70b")
    columns = enumerate_plans(model, 1000, 4096, 512, SearchSpace(chips_at_most=True))
    used = columns["tp"] * columns["pp"] * columns["cp"] * columns["dp"]
    assert used.max() <= 1000 and used.min() >= 1
    assert np.all(512 % columns["dp"] == 0)


def test_best_plan_figures_match_train(tmp_path: object) -> None:
    model = load_model("llama3-8b")
    hw = hardware_for(load_system("dgx-h100"))
    result = search(model, hw, 64, 8192, 256, top=2, tokens=1e12)
    from clusterplan.specs import Plan

    for record in result.best:
        plan = Plan.model_validate(record["plan"])
        again = train_record(model, hw, plan, 1e12, 0.9)
        for key in ("step_time_s", "mfu", "hfu", "memory_bytes_per_chip", "time_to_train_s"):
            assert record[key] == pytest.approx(again[key])
    assert result.best[0]["why_not_best"] == "best"
    assert result.best[0]["step_time_s"] <= result.best[1]["step_time_s"]


def test_cost_objective_prefers_fewer_chip_hours() -> None:
    model = load_model("llama3-8b")
    hw = hardware_for(load_system("dgx-h100"))
    space = SearchSpace(chips_at_most=True)
    fastest = search(model, hw, 512, 8192, 512, space, objective="time", top=1).best[0]
    cheapest = search(model, hw, 512, 8192, 512, space, objective="cost", top=1).best[0]
    cost = lambda r: r["step_time_s"] * r["chips"]  # noqa: E731
    assert cost(cheapest) <= cost(fastest)
    assert fastest["step_time_s"] <= cheapest["step_time_s"]


def test_no_plan_is_an_empty_result_not_an_error() -> None:
    model = load_model("llama3-405b")
    hw = hardware_for(load_system("dgx-h100"))
    result = search(model, hw, 8, 8192, 8, top=1)  # 405B cannot fit on 8 GPUs
    assert result.best == [] and result.plans_fitting == 0 and result.plans_enumerated > 0


def _row_cases() -> list[object]:
    return [c for c in all_cases(["megatron_sc21", "korthikanti2022"]) if c.skip is None]


@pytest.mark.parametrize("case", _row_cases(), ids=lambda c: c.label)  # type: ignore[attr-defined]
def test_search_is_at_least_as_fast_as_the_published_plan(case: object) -> None:
    """Quality check (issue #3): under the row's constraints the best plan found is predicted at
    least as fast as the published plan (which must be in the space)."""
    plan = case.plan  # type: ignore[attr-defined]
    model, system = case.model, case.system  # type: ignore[attr-defined]
    hw = hardware_for(system)
    settings = {k: getattr(plan, k) for k in ("overlap_tp", "overlap_dp", "overlap_pp", "flash_attention",
                                              "grad_reduce")}
    space = dataclasses.replace(SearchSpace(), settings=settings, max_micro_batch=4)
    published = estimate(model, hw, PlanBatch.from_plans([plan], model))
    result = search(model, hw, plan.chips, plan.seq_len, plan.global_batch, space, max_memory_fraction=1.0,
                    top=1)
    assert result.best
    assert result.best[0]["step_time_s"] <= float(published.step_time[0]) * (1 + 1e-9)
