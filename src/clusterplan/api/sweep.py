"""What is the best plan at each point of a grid? (``clusterplan sweep``)

Two steps, so that every refusal comes before any work: :func:`prepare` validates the whole
sweep file and makes its executor (nothing started), the caller checks where the rows go, and
:func:`answer` runs every point's plan search on the executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from clusterplan.api._base import Answer, Request
from clusterplan.errors import SpecError

if TYPE_CHECKING:  # the CLI imports this module at start: the sweep machinery loads when it runs
    from clusterplan.distributed import Executor
    from clusterplan.sweep import Sweep

#: Most points a sweep may have unless --max-points raises it: each point is a plan search, and
#: the validated points (about 2 kB each) are all held in memory before the first one runs.
DEFAULT_MAX_POINTS = 100_000


class SweepRequest(Request):
    """A sweep file (docs/sweep.md), where its rows go (default: ``<stem>.parquet`` beside it), the
    executor (``local`` process pool or ``ray``) and the most points it may have."""

    sweep_file: Path
    output: Path | None = None
    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    max_points: int = DEFAULT_MAX_POINTS

    @field_validator("max_points")
    @classmethod
    def _max_points(cls, value: int) -> int:
        if value < 1:
            raise SpecError("--max-points", value, "must be >= 1")
        return value

    @property
    def output_path(self) -> Path:
        return self.output if self.output is not None else self.sweep_file.with_suffix(".parquet")


@dataclass(frozen=True)
class SweepJob:
    """A sweep validated whole (every point) and its executor, not started."""

    sweep: Sweep
    executor: Executor

    @property
    def points(self) -> int:
        return len(self.sweep.points)


class SweepAnswer(Answer):
    """One row per point, in point order; ``axes``: the columns that vary; ``record``: the
    ``sweep --json`` object."""

    rows: list[dict[str, Any]]
    axes: list[str]


def prepare(request: SweepRequest) -> SweepJob:
    """The executor (its options checked) and every point of the file validated, before anything
    runs: a refusal is one SpecError."""
    from clusterplan.distributed import make_executor
    from clusterplan.sweep import load_sweep

    executor = make_executor(request.executor, request.ray_address, request.workers)
    return SweepJob(load_sweep(request.sweep_file, max_points=request.max_points), executor)


def answer(request: SweepRequest, job: SweepJob, on_start: Callable[[str, int], None] | None = None,
           on_result: Callable[[], None] | None = None) -> SweepAnswer:
    """Every point searched on the job's executor (started first: a Ray cluster joined or refused);
    ``on_start(executor, points)`` is told once it runs, ``on_result()`` as each point finishes."""
    from clusterplan.sweep import run_sweep

    with job.executor as runner:
        runner.start()
        if on_start is not None:
            on_start(runner.describe(), job.points)
        rows = run_sweep(job.sweep, runner,
                         on_result=(lambda _index, _row: on_result()) if on_result is not None else None)
    record = {"sweep": str(request.sweep_file), "output": str(request.output_path), "plans": rows}
    return SweepAnswer(record=record, rows=rows, axes=job.sweep.varying_axes())
