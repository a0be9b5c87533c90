"""Closed-form reliability of a training job: interruptions, checkpoint interval, goodput.

The job fails as a Poisson process of rate ``lambda`` (the sum of per-component rates times
component counts, ``failures.py``). Work proceeds in segments of ``tau`` seconds of useful
training, each followed by a checkpoint that blocks for ``C`` seconds. A failure costs the
detection time ``D``, the restart (re-scheduling and re-initialisation, growing with the job)
and restore time ``R``, any wait for repair, and the work since the last completed checkpoint
(on average half a segment). First order (Young 1974; Daly 2006), the wall-clock time ``W`` for
``U`` seconds of useful work is

    W = U * (1 + C / tau) / (1 - lambda * (D + R + (tau + C) / 2))

and the interval minimising it is ``tau* = sqrt(2 C / lambda)`` (Young), refined numerically on
the formula above. Planned interruptions (maintenance) cost a restart but no lost work (the job
checkpoints first). Goodput is ``U / W``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import minimize_scalar

from clusterplan.errors import SpecError

Recovery = Literal["spares", "wait", "elastic"]


@dataclass(frozen=True)
class ReliabilityInputs:
    """Everything the reliability models need, in SI units (rates per second)."""

    cause_rates: dict[str, float]  # unexpected interruptions per second of wall time, by cause
    planned_rate: float  # planned (maintenance) interruptions per second
    detection_s: float
    restart_s: float  # re-scheduling, re-initialisation, rendezvous (grows with the job)
    restore_s: float  # reading the checkpoint back
    checkpoint_write_s: float  # time a checkpoint blocks training
    repair_s: float  # waiting for a replacement when there are no hot spares
    hardware_causes: frozenset[str] = field(default_factory=frozenset)
    min_interval_s: float = 0.0  # an asynchronous checkpoint must persist before the next starts
    recovery: Recovery = "spares"
    replicas: int = 1  # data-parallel replicas (elastic continuation drops one)

    @property
    def failure_rate(self) -> float:
        return sum(self.cause_rates.values())

    @property
    def hardware_rate(self) -> float:
        return sum(rate for cause, rate in self.cause_rates.items() if cause in self.hardware_causes)

    def downtime_per_failure(self) -> float:
        """Mean wall time lost to a failure besides the lost work: detection, restart, restore,
        and (without hot spares) the repair of hardware failures."""
        base = self.detection_s + self.restart_s + self.restore_s
        if self.recovery == "spares" or self.failure_rate == 0:
            return base
        hardware_share = self.hardware_rate / self.failure_rate
        if self.recovery == "wait":
            return base + hardware_share * self.repair_s
        # elastic: keep going with one replica fewer until the repair, losing 1/replicas of the
        # throughput for the repair time.
        return base + hardware_share * self.repair_s / max(self.replicas, 1)


def wall_time(inputs: ReliabilityInputs, work_s: float, interval_s: float) -> float:
    """Expected wall-clock time for ``work_s`` of useful training (first order, see module doc)."""
    tau, cost = interval_s, inputs.checkpoint_write_s
    waste = inputs.failure_rate * (inputs.downtime_per_failure() + (tau + cost) / 2.0)
    waste += inputs.planned_rate * (inputs.restart_s + inputs.restore_s)
    if waste >= 1.0:
        return math.inf
    return work_s * (1.0 + cost / tau) / (1.0 - waste)


def young_interval(inputs: ReliabilityInputs) -> float:
    """Young's first-order optimum sqrt(2 C / lambda) (seconds)."""
    if inputs.failure_rate <= 0:
        return math.inf
    return math.sqrt(2.0 * max(inputs.checkpoint_write_s, 1e-3) / inputs.failure_rate)


def optimal_interval(inputs: ReliabilityInputs) -> float:
    """The interval minimising :func:`wall_time`: Young's value refined over a log grid from
    1/100 to 100 times it, then by a bounded scalar search around the best grid point."""
    start = young_interval(inputs)
    if not math.isfinite(start):
        return 30 * 86400.0
    start = max(start, inputs.min_interval_s)
    grid = np.maximum(start * np.logspace(-2, 2, 401), inputs.min_interval_s)
    costs = np.array([wall_time(inputs, 1.0, tau) for tau in grid])
    best = int(np.argmin(costs))
    if not math.isfinite(costs[best]):
        return start  # no interval makes progress: report Young's value, wall time is infinite
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    if high <= low:
        return float(low)
    result = minimize_scalar(lambda tau: wall_time(inputs, 1.0, tau), bounds=(low, high), method="bounded")
    return float(max(result.x, inputs.min_interval_s))


def closed_form(inputs: ReliabilityInputs, work_s: float, interval_s: float | None = None) -> dict[str, float]:
    """Expected interruptions, goodput and time to train for ``work_s`` of failure-free time."""
    if work_s < 0:
        raise SpecError("work", work_s, "must be >= 0 seconds")
    tau = optimal_interval(inputs) if interval_s is None else interval_s
    if tau <= 0:
        raise SpecError("--checkpoint-interval", tau, "must be > 0")
    wall = wall_time(inputs, work_s, tau)
    return {
        "checkpoint_interval_s": tau,
        "young_interval_s": young_interval(inputs),
        "time_to_train_failure_free_s": work_s,
        "time_to_train_s": wall,
        "goodput": work_s / wall if wall > 0 and math.isfinite(wall) else 0.0,
        "interruptions_expected": inputs.failure_rate * wall if math.isfinite(wall) else math.inf,
        "planned_interruptions_expected": inputs.planned_rate * wall if math.isfinite(wall) else math.inf,
        "mtbf_s": 1.0 / inputs.failure_rate if inputs.failure_rate > 0 else math.inf,
    }
