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


def test_the_best_point_never_loses_to_the_shipped_fit_on_its_grid(screen_fit: ModuleType,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    screen_fit.main(["ampere", "--grid", "0.95,1,1.05"])
    first = capsys.readouterr().out.splitlines()[0]
    best, shipped = (float(part.split("%")[0].split()[-1]) for part in first.split("MAPE")[1].split("(shipped fit:"))
    assert best <= shipped
