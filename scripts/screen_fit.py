"""Screen an estimator change in seconds before spending a calibration on it.

    .venv/bin/python scripts/screen_fit.py hopper            # one family's training rows
    .venv/bin/python scripts/screen_fit.py blackwell --grid 0.9,0.95,1,1.05

``clusterplan calibrate`` refits every family and cross-validates the fit: about 50 minutes on two
cores. This script answers a narrower question quickly: with the change in the working tree, how
well can the family's training rows be fitted if only its GEMM efficiencies move? It scales the
shipped fit's bf16 and fp8 (and, with fp8, fp4) matmul efficiencies over a grid, predicts the
family's rows of every training table at each point, and prints the point with the lowest mean
of the fitted tables' MAPE, next to the shipped fit's figures. The validation-only tables
(``calibrate.VALIDATION_ONLY_TABLES``) are reported, never optimised.

Run it on the commit before the change and on the change: a mechanism that worsens this
two-parameter refit of the fitted tables rarely survives the full cross-validated calibration
(round 17: a TP-overlap model screened from 12.63 % to 13.33 % on Hopper and from 7.43 % to
8.12 % on Blackwell; calibrated, the fitted tables' out-of-sample mean went from 16.13 % to
16.81 %; docs/validation.md).
This is a screen, not a result: the full fit moves every parameter, and only its
cross-validated errors count.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from clusterplan.catalog.loader import load_efficiency
from clusterplan.costs.compute import Efficiency
from clusterplan.validation import registry
from clusterplan.validation.calibrate import VALIDATION_ONLY_TABLES
from clusterplan.validation.case import Case
from clusterplan.validation.harness import by_table, mape, run

DEFAULT_GRID = (0.85, 0.9, 0.95, 1.0, 1.05, 1.1)


@dataclass(frozen=True)
class TableScore:
    """One table's errors over the family's rows (percent)."""

    mape: float
    signed: float
    rows: int


Scores = dict[str, TableScore]


def family_rows(family: str) -> list[Case]:
    """The family's modelled training rows with a published speed, every training table."""
    return [case for table in registry.TRAINING_TABLES for case in registry.all_cases([table])
            if case.skip is None and case.plan is not None and case.family == family
            and math.isfinite(case.published)]


def scaled(efficiency: Efficiency, bf16: float, low: float) -> Efficiency:
    """The fit with its bf16 matmul efficiency times ``bf16`` and its fp8/fp4 ones times ``low``."""
    matmul = {name: min(0.99, value * (bf16 if name == "bf16" else low)) for name, value in efficiency.matmul.items()}
    return efficiency.model_copy(update={"matmul": matmul})


def score(cases: Sequence[Case], family: str, efficiency: Efficiency) -> Scores:
    """Each table's MAPE and mean signed error with ``efficiency`` for ``family``."""

    def lookup(name: str) -> Efficiency:
        return efficiency if name == family else load_efficiency(name)

    scores = {}
    for table, results in sorted(by_table(run(cases, lookup)).items()):
        errors = [100.0 * r.error for r in results if r.error is not None]
        if errors:
            scores[table] = TableScore(mape(results), statistics.fmean(errors), len(errors))
    return scores


def fitted_mean(scores: Scores) -> float:
    """Mean MAPE over the tables a calibration fits (nan without any)."""
    fitted = [s.mape for table, s in scores.items() if table not in VALIDATION_ONLY_TABLES]
    return statistics.fmean(fitted) if fitted else math.nan


def screen(family: str, grid: Sequence[float]) -> tuple[tuple[float, float], Scores, Scores]:
    """The best (bf16, low-precision) scaling on ``grid`` with its scores, and the shipped fit's.
    Ties go to the scaling nearest the shipped fit (a precision without rows stays at x1)."""
    cases = family_rows(family)
    shipped = load_efficiency(family)
    nearest_first = sorted(grid, key=lambda g: abs(g - 1.0))
    best: tuple[float, tuple[float, float], Scores] | None = None
    for bf16, low in itertools.product(nearest_first, nearest_first):
        scores = score(cases, family, scaled(shipped, bf16, low))
        mean = fitted_mean(scores)
        if best is None or mean < best[0]:
            best = (mean, (bf16, low), scores)
    if best is None:
        raise SystemExit("screen_fit: the grid is empty")
    return best[1], best[2], score(cases, family, shipped)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", help="chip family (catalog/efficiency.yaml), e.g. hopper")
    parser.add_argument("--grid", default=",".join(f"{g:g}" for g in DEFAULT_GRID),
                        help="comma-separated scale factors for the matmul efficiencies")
    args = parser.parse_args(argv)
    grid = [float(g) for g in args.grid.split(",") if g.strip()]
    (bf16, low), best, shipped = screen(args.family, grid)
    print(f"{args.family}: best scaling bf16 x{bf16:g}, fp8/fp4 x{low:g}: fitted tables' mean MAPE "
          f"{fitted_mean(best):.2f} % (shipped fit: {fitted_mean(shipped):.2f} %)")
    print(f"{'table':30s} {'rows':>4s} {'MAPE':>7s} {'signed':>7s} {'shipped':>8s}")
    for table, s in best.items():
        mark = " (validation only)" if table in VALIDATION_ONLY_TABLES else ""
        print(f"{table:30s} {s.rows:4d} {s.mape:7.2f} {s.signed:+7.2f} {shipped[table].mape:8.2f}{mark}")


if __name__ == "__main__":
    main()
