"""scripts/screen_fit.py: the quick two-parameter refit that screens an estimator change."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "screen_fit.py"


@pytest.fixture(scope="module")
def screen_fit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screen_fit", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["screen_fit"] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_a_grid_of_one_reproduces_the_shipped_fit(screen_fit: ModuleType) -> None:
    """Scaling by 1 is the shipped fit, table by table."""
    (bf16, low), best, shipped = screen_fit.screen("ampere", [1.0])
    assert (bf16, low) == (1.0, 1.0)
    assert best == shipped
    assert best["korthikanti2022"].rows == 9


def test_slower_gemms_make_a_step_time_table_predict_slower(screen_fit: ModuleType) -> None:
    """Scaling the bf16 efficiency down lengthens every predicted step: the signed error of a
    step-time table (positive = predicted slower) rises, and the scaling reaches the rows."""
    cases = [c for c in screen_fit.family_rows("ampere") if c.table == "korthikanti2022"]
    efficiency = screen_fit.load_efficiency("ampere")
    at_fit = screen_fit.score(cases, "ampere", efficiency)["korthikanti2022"]
    slower = screen_fit.score(cases, "ampere", screen_fit.scaled(efficiency, 0.8, 1.0))["korthikanti2022"]
    assert slower.signed > at_fit.signed + 5.0


def test_validation_only_tables_are_reported_but_not_optimised(screen_fit: ModuleType,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The objective is the mean over the fitted tables only: on Ampere, Korthikanti and SC'21;
    LLM Foundry's FSDP rows (validation only) are printed and marked."""
    scores = screen_fit.score(screen_fit.family_rows("ampere"), "ampere", screen_fit.load_efficiency("ampere"))
    assert "llmfoundry_mpt" in scores
    fitted = (scores["korthikanti2022"].mape + scores["megatron_sc21"].mape) / 2
    assert screen_fit.fitted_mean(scores) == pytest.approx(fitted)
    screen_fit.main(["ampere", "--grid", "1"])
    printed = capsys.readouterr().out
    assert f"mean MAPE {fitted:.2f} %" in printed
    lines = printed.splitlines()
    assert any(line.startswith("llmfoundry_mpt") and line.endswith("(validation only)") for line in lines)
