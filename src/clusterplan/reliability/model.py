"""Closed-form reliability of a training job: interruptions, checkpoint interval, goodput.

The process (the Monte Carlo in ``montecarlo.py`` samples exactly this one):

* Useful work ``U`` proceeds in segments of ``tau`` seconds, each followed by a checkpoint that
  blocks training for ``C`` seconds (the last segment is shorter when ``tau`` does not divide
  ``U``, and is checkpointed too).
* Unexpected interruptions arrive as Poisson processes over the whole wall time, one per cause
  (rate ``lambda_c``); planned ones (maintenance) at rate ``mu``. Each carries an outage
  ``S_k``: detection, replacement of the failed part, restart and restore (see
  :meth:`ReliabilityInputs.outage_s`).
* A *rollback* failure stops the job, which restarts from the last completed checkpoint and
  loses the work since. With elastic continuation a failure confined to one node is *absorbed*:
  the healthy data-parallel replicas pause, drop the failed one and go on (the step in flight is
  redone; a hot spare or a repaired node joins later), losing no further work. Planned
  interruptions lose no work (the job checkpoints first).
* **Folding.** An interruption that arrives while the job is already stopped does not start a
  new outage: its own recovery (replacing that part) runs alongside the one in progress and the
  job resumes when the last recovery in progress ends, i.e. the outage is extended to
  ``max(current end, arrival + S_k)``; no work is lost (the job is not running). Outages are then
  the busy periods of an M/G/infinity queue (Takacs 1962): the job is outside an outage a
  fraction ``exp(-rho)`` of the time, ``rho = sum_k rate_k E[S_k]``, and an outage lasts
  ``(exp(rho) - 1) / Lambda`` on average, ``Lambda`` the total interruption rate. Without
  folding (``fold=False``: the accounting before issue #14) every interruption adds its whole
  outage: M/G/1 busy periods, ``E[S] / (1 - rho)``, never ending at ``rho >= 1``.

Exact mean wall time (renewal argument; Daly 2006, "A higher order estimate of the optimum
checkpoint interval for restart dumps", FGCS 22): a segment of ``T = tau + C`` seconds restarts
at every rollback failure (rate ``lambda_r``), so it takes ``expm1(lambda_r T) / lambda_r`` of
running time on average, and

    W = [(n - 1) expm1(lambda_r T) + expm1(lambda_r T_last)] / lambda_r  *  F(rho),
    F = exp(rho) with folding, 1 / (1 - rho) without,

with ``n`` segments, the last of ``T_last`` seconds. For one cause with a fixed outage ``R`` this is
Daly's complete model ``M exp(R/M) (exp((tau + C)/M) - 1) U / tau`` (``M = 1/lambda``: a failure
during the restart restarts it). To first order in ``lambda T`` and ``rho`` both are Young's
(1974) ``W = U (1 + C/tau) / (1 - lambda (D + (tau + C)/2))``. The best interval minimises
``expm1(lambda_r (tau + C)) / tau``, which does not depend on the outages; Young's
``sqrt(2 C / lambda_r)`` is its first-order value. The interval is never below what a
checkpoint needs: its blocking write, the background persist or peer copy that must finish
before the next one starts, and one training step (:meth:`ReliabilityInputs.interval_floor`).
Goodput is ``U / W``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from scipy.optimize import minimize_scalar

from clusterplan.errors import SpecError

Replacement = Literal["spares", "wait"]

#: Below this goodput the job spends more than 99 % of its time recovering: failures outpace recovery.
OUTPACED_GOODPUT = 0.01
#: Checkpoint interval when nothing rolls the job back (the interval then only bounds a persist).
NO_ROLLBACK_INTERVAL_S = 30 * 86400.0
_EXP_LIMIT = 700.0  # exp() of more overflows a float: the quantity is infinite for our purposes


def _exp(x: float) -> float:
    return math.inf if x > _EXP_LIMIT else math.exp(x)


def _expm1(x: float) -> float:
    return math.inf if x > _EXP_LIMIT else math.expm1(x)


@dataclass(frozen=True)
class ReliabilityInputs:
    """Everything the reliability models need, in SI units (rates per second of wall time).

    ``hardware_causes`` are the causes whose failed part is confined to a node and must be
    replaced (a hot spare after ``swap_s``, or a repair after ``repair_s`` with ``replacement``
    ``"wait"``); the others (software) restart the job on the same nodes. ``elastic``: a hardware
    failure is absorbed by the other data-parallel replicas (needs ``replicas >= 2``).
    ``lost_copy_s``: expected extra outage of a rolled-back hardware failure whose in-memory
    checkpoint copy is lost too (restore from storage, redo the work since the last persist).
    """

    cause_rates: dict[str, float]
    planned_rate: float
    detection_s: float
    restart_s: float  # re-scheduling, re-initialisation, rendezvous (grows with the job)
    restore_s: float  # reading the checkpoint back (storage or peers)
    checkpoint_write_s: float  # time a checkpoint blocks training
    repair_s: float  # waiting for a repaired node when there is no hot spare
    hardware_causes: frozenset[str] = field(default_factory=frozenset)
    replacement: Replacement = "spares"
    swap_s: float = 0.0  # bringing a hot spare into the job
    elastic: bool = False
    elastic_pause_s: float = 0.0  # healthy replicas re-form the data-parallel group
    step_s: float = 0.0  # one training step (the step in flight is redone; the interval floor)
    replicas: int = 1  # data-parallel replicas
    lost_copy_s: float = 0.0
    fold: bool = True  # failures during an outage fold into it
    min_interval_s: float = 0.0  # a background persist / peer copy must end before the next checkpoint
    min_interval_reason: str = ""

    @property
    def failure_rate(self) -> float:
        return sum(self.cause_rates.values())

    @property
    def hardware_rate(self) -> float:
        return sum(rate for cause, rate in self.cause_rates.items() if cause in self.hardware_causes)

    def absorbs(self, cause: str) -> bool:
        """Whether elastic continuation absorbs a failure of ``cause`` (no rollback)."""
        return self.elastic and self.replicas >= 2 and cause in self.hardware_causes

    @property
    def replacement_s(self) -> float:
        """Time until a failed node is replaced: a hot spare's swap, or the repair."""
        return self.swap_s if self.replacement == "spares" else self.repair_s

    def outage_s(self, cause: str) -> float:
        """The outage one failure of ``cause`` starts (seconds the whole job stands still).

        Absorbed (elastic): detection, the pause, half a step redone on average, and the
        replacement time at one replica fewer, as the equivalent full stop ``replacement /
        replicas``. Rollback: detection, the replacement (hardware causes), restart, restore,
        and the expected cost of a lost in-memory copy (hardware causes).
        """
        hardware = cause in self.hardware_causes
        if self.absorbs(cause):
            return (self.detection_s + self.elastic_pause_s + self.step_s / 2.0
                    + self.replacement_s / self.replicas)
        outage = self.detection_s + self.restart_s + self.restore_s
        return outage + (self.replacement_s + self.lost_copy_s if hardware else 0.0)

    @property
    def planned_outage_s(self) -> float:
        return self.restart_s + self.restore_s

    @property
    def rollback_rate(self) -> float:
        """Rate of the failures that roll the job back to its last checkpoint."""
        return sum(rate for cause, rate in self.cause_rates.items() if not self.absorbs(cause))

    @property
    def load(self) -> float:
        """``rho``: outage-seconds started per second, sum of rate x outage over all interruptions."""
        unexpected = sum(rate * self.outage_s(cause) for cause, rate in self.cause_rates.items())
        return unexpected + self.planned_rate * self.planned_outage_s

    def outage_factor(self) -> float:
        """Wall time per second of running time: ``exp(rho)`` folded, ``1 / (1 - rho)`` not."""
        rho = self.load
        if self.fold:
            return _exp(rho)
        return math.inf if rho >= 1.0 else 1.0 / (1.0 - rho)

    def downtime_per_failure(self) -> float:
        """Mean outage one unexpected failure starts (rate-weighted over causes)."""
        rate = self.failure_rate
        if rate == 0:
            return 0.0
        return sum(r * self.outage_s(cause) for cause, r in self.cause_rates.items()) / rate

    def interval_floor(self) -> tuple[float, str]:
        """The shortest checkpoint interval the checkpoint allows, and what sets it."""
        floors = [(self.checkpoint_write_s, "the blocking checkpoint write"),
                  (self.min_interval_s, self.min_interval_reason or "the background copy"),
                  (self.step_s, "one training step")]
        return max(floors, key=lambda item: item[0])


def segments(work_s: float, interval_s: float, checkpoint_s: float) -> tuple[int, float]:
    """Checkpoint segments (the last one possibly short) and the length of the last one."""
    if work_s == 0:
        return 0, 0.0
    ratio = work_s / interval_s
    count = max(1, math.ceil(ratio - 1e-9 * ratio))  # 3 x tau must not round up to 4 segments
    last = min(max(work_s - (count - 1) * interval_s, 0.0), interval_s)  # rounding at 1e20 segments
    return count, last + checkpoint_s


def running_time(inputs: ReliabilityInputs, work_s: float, interval_s: float) -> float:
    """Mean time the job runs (trains, checkpoints, and redoes work lost to rollbacks)."""
    count, last = segments(work_s, interval_s, inputs.checkpoint_write_s)
    if count == 0:
        return 0.0
    lam = inputs.rollback_rate
    if lam == 0:
        return work_s + count * inputs.checkpoint_write_s
    period = interval_s + inputs.checkpoint_write_s
    return ((count - 1) * _expm1(lam * period) + _expm1(lam * last)) / lam


def wall_time(inputs: ReliabilityInputs, work_s: float, interval_s: float) -> float:
    """Exact mean wall-clock time for ``work_s`` of useful training (see module doc)."""
    running = running_time(inputs, work_s, interval_s)
    return 0.0 if running == 0 else running * inputs.outage_factor()


def interval_cost(inputs: ReliabilityInputs, interval_s: float) -> float:
    """Running time per second of work for long runs: ``expm1(lambda_r (tau + C)) / (lambda_r tau)``."""
    lam, period = inputs.rollback_rate, interval_s + inputs.checkpoint_write_s
    if lam == 0:
        return period / interval_s
    return _expm1(lam * period) / (lam * interval_s)


def young_interval(inputs: ReliabilityInputs) -> float:
    """Young's first-order optimum sqrt(2 C / lambda_r) (seconds)."""
    if inputs.rollback_rate <= 0:
        return math.inf
    return math.sqrt(2.0 * inputs.checkpoint_write_s / inputs.rollback_rate)


def optimal_interval(inputs: ReliabilityInputs) -> float:
    """The interval minimising :func:`interval_cost`, before the floor applies (a bounded search
    on log(tau) around Young's value; ``inf`` when nothing rolls the job back, 0 when a
    checkpoint costs nothing)."""
    start = young_interval(inputs)
    if not math.isfinite(start):
        return math.inf
    if start == 0:
        return 0.0
    low, high = math.log(start * 1e-4), math.log(start * 1e2)
    found = minimize_scalar(lambda x: interval_cost(inputs, math.exp(x)), bounds=(low, high),
                            method="bounded", options={"xatol": 1e-6})
    return float(math.exp(found.x))


@dataclass(frozen=True)
class Estimate:
    """The closed form's answer for one job (SI units)."""

    work_s: float
    interval_s: float
    interval_optimum_s: float  # before the floor (inf: nothing rolls back)
    interval_floor_s: float
    interval_floor_reason: str
    interval_clamped: bool  # the optimum was below the floor
    young_interval_s: float
    wall_time_s: float
    goodput: float
    interruptions: float  # unexpected, including those folded into an outage
    planned_interruptions: float
    mtbf_s: float
    load: float
    outage_factor: float
    folded: bool

    @property
    def outpaced(self) -> bool:
        """Failures outpace recovery: more than 99 % of the wall time goes to recovering."""
        return self.goodput < OUTPACED_GOODPUT

    def record(self) -> dict[str, float | str | bool]:
        return {
            "checkpoint_interval_s": self.interval_s,
            "checkpoint_interval_optimum_s": self.interval_optimum_s,
            "checkpoint_interval_floor_s": self.interval_floor_s,
            "checkpoint_interval_floor_reason": self.interval_floor_reason,
            "checkpoint_interval_clamped": self.interval_clamped,
            "young_interval_s": self.young_interval_s,
            "time_to_train_failure_free_s": self.work_s,
            "time_to_train_s": self.wall_time_s,
            "goodput": self.goodput,
            "interruptions_expected": self.interruptions,
            "planned_interruptions_expected": self.planned_interruptions,
            "mtbf_s": self.mtbf_s,
            "recovery_load": self.load,
            "outage_factor": self.outage_factor,
            "failures_fold_into_restarts": self.folded,
            "outpaced": self.outpaced,
        }


def choose_interval(inputs: ReliabilityInputs, interval_s: float | None = None) -> tuple[float, float, bool]:
    """(interval, optimum, clamped): the optimum clamped to the floor, or the given interval,
    refused when below the floor."""
    floor, reason = inputs.interval_floor()
    optimum = optimal_interval(inputs)
    if interval_s is not None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise SpecError("--checkpoint-interval", interval_s, "must be a finite number of seconds > 0")
        if interval_s < floor:
            raise SpecError("--checkpoint-interval", interval_s,
                            f"must be >= {floor:.4g} s, the time {reason} takes")
        return interval_s, optimum, False
    if not math.isfinite(optimum):
        return max(floor, NO_ROLLBACK_INTERVAL_S), optimum, False
    return max(optimum, floor), optimum, optimum < floor


def closed_form(inputs: ReliabilityInputs, work_s: float, interval_s: float | None = None) -> Estimate:
    """Expected interruptions, goodput and time to train for ``work_s`` of failure-free time."""
    if not (math.isfinite(work_s) and work_s >= 0):
        raise SpecError("work", work_s, "must be a finite number of seconds >= 0")
    tau, optimum, clamped = choose_interval(inputs, interval_s)
    floor, reason = inputs.interval_floor()
    wall = wall_time(inputs, work_s, tau)
    finite = math.isfinite(wall)
    goodput = 1.0 if work_s == 0 else (work_s / wall if finite else 0.0)
    rate = inputs.failure_rate
    return Estimate(
        work_s=work_s, interval_s=tau, interval_optimum_s=optimum, interval_floor_s=floor,
        interval_floor_reason=reason, interval_clamped=clamped, young_interval_s=young_interval(inputs),
        wall_time_s=wall, goodput=goodput,
        interruptions=rate * wall if finite else math.inf,
        planned_interruptions=inputs.planned_rate * wall if finite else math.inf,
        mtbf_s=1.0 / rate if rate > 0 else math.inf,
        load=inputs.load, outage_factor=inputs.outage_factor(), folded=inputs.fold,
    )
