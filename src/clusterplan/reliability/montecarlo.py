"""Monte Carlo replay of a training run with random interruptions (issue #5, item 4).

The sampled process is the one the closed form (``model.py``; Young 1974, Daly 2006) describes
to first order, without its approximations:

* Useful work ``U`` proceeds in segments of ``tau`` seconds, each followed by a checkpoint that
  blocks training for ``C`` seconds; the last segment is shorter when ``tau`` does not divide
  ``U``, and is checkpointed too, so a failure-free run takes exactly ``U + ceil(U / tau) C``.
* Unexpected interruptions arrive as a Poisson process of rate ``lambda = sum(cause_rates)``
  over the whole wall-clock time of the run. The cause of each is drawn in proportion to
  ``cause_rates``. One that hits the running job (training or writing a checkpoint) loses the
  time since the last completed checkpoint (sampled, not the closed form's mean ``(tau + C)/2``)
  and costs the downtime detection + restart + restore, plus for hardware causes the repair
  (recovery ``wait``) or ``repair_s / replicas`` (``elastic``), nothing extra with ``spares``.
* Planned interruptions (maintenance) arrive as a Poisson process of rate ``planned_rate`` over
  the wall time too, cost restart + restore and lose no work (the job checkpoints first).
* An interruption during another's downtime adds its own downtime and loses no further work (the
  job is already back at its checkpoint). This is the closed form's accounting, ``lambda W``
  interruptions each costing its downtime, so the mean number of interruptions is exactly
  ``lambda E[W]``; when the downtime load ``rho = lambda D + mu (restart + restore)`` reaches 1
  the recoveries never catch up and the run never ends, as the closed form's ``waste >= 1``.

How it is sampled, vectorised over trials. Because the Poisson process is memoryless, the
failures that hit the running job form a Poisson process of rate ``lambda`` in the job's own
running time, and those that arrive during downtime a Poisson process in the downtime clock.
So each trial draws, a block of ``max_failures_per_block`` at a time, a (trials, block) matrix of
exponential running times between failures ``X``; an interval completes ``floor(X / (tau + C))``
checkpoint cycles; cumulative sums along the block find where the remaining work fits into an
interval, and the trial finishes there (the remaining work and its checkpoints). Unfinished
trials carry to the next block. Each block's failures get causes (multinomial), the planned
interruptions in its running time a Poisson count, and their downtime grows by the interruptions
arriving during it (a Poisson count per generation, a branching process: the busy period of an
M/G/1 queue, mean ``d / (1 - rho)``). Python loops run per block, per downtime generation and
per cache-sized chunk of rows of a block, never per failure or per trial. Trials whose wall time
passes ``cap_factor`` times the failure-free time are stopped and marked unfinished (wall time
``inf``).

:func:`expected_wall_time` is the exact mean of this process (renewal argument),
``E[W] = [(n - 1) expm1(lambda T) + expm1(lambda T_last)] / (lambda (1 - rho))`` with ``T = tau + C``;
the closed form is its first-order expansion: their ratio is about
``1 - rho lambda T / (2 (1 - rho)) - (lambda T)^2 / 12``, within 2 % while ``lambda T`` and ``rho``
are a few tenths or less, and the closed form is the pessimistic one beyond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from clusterplan.errors import SpecError
from clusterplan.reliability.model import ReliabilityInputs

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Key of the planned (maintenance) interruptions' downtime in ``lost_s_by_cause``.
PLANNED = "planned"
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
#: Elements of one (rows, block) chunk of the failure matrix: small enough to stay in cache.
_CHUNK_ELEMENTS = 1 << 16
#: Downtime generations before a trial is declared never-ending (the wall-time cap comes first
#: unless rho is within a hair of 1).
_MAX_GENERATIONS = 100_000


@dataclass(frozen=True)
class MonteCarloResult:
    """Per-trial outcomes of :func:`simulate` (arrays are read-only).

    ``wall_time_s`` is ``inf`` for trials stopped at the wall-time cap (``finished`` False);
    ``interruptions`` counts the unexpected ones, including those during recoveries;
    ``lost_s_by_cause`` is the mean over trials of the seconds lost per cause: downtime plus the
    work lost since the last checkpoint, and the planned interruptions' downtime under
    ``"planned"`` (when ``planned_rate > 0``). Work + completed checkpoints + the sum of
    ``lost_s_by_cause`` is the mean wall time when every trial finished.
    """

    work_s: float
    interval_s: float
    wall_time_s: FloatArray
    interruptions: IntArray
    planned_interruptions: IntArray
    lost_s_by_cause: dict[str, float]
    finished: BoolArray
    cap_s: float

    @property
    def trials(self) -> int:
        return int(self.wall_time_s.size)

    def percentiles(self) -> dict[str, float]:
        """p50, p90 and p99 of the wall-clock time to train (``inf`` where unfinished trials reach)."""
        out = {}
        with np.errstate(invalid="ignore"):  # interpolating between two infs gives nan: inf
            for key, q in PERCENTILES.items():
                value = float(np.percentile(self.wall_time_s, q))
                out[key] = math.inf if math.isnan(value) else value
        return out

    def mean_wall_time(self) -> float:
        return float(np.mean(self.wall_time_s))

    def goodput(self) -> float:
        """Mean over trials of work / wall time (0 for unfinished trials)."""
        if self.work_s == 0:
            return 1.0
        with np.errstate(divide="ignore"):
            ratio = np.where(self.finished, self.work_s / self.wall_time_s, 0.0)
        return float(np.mean(ratio))

    def record(self) -> dict[str, object]:
        return {
            "trials": self.trials,
            "checkpoint_interval_s": self.interval_s,
            "time_to_train_failure_free_s": self.work_s,
            "time_to_train_s": self.percentiles(),
            "mean_time_to_train_s": self.mean_wall_time(),
            "goodput_mean": self.goodput(),
            "interruptions_mean": float(np.mean(self.interruptions)),
            "planned_interruptions_mean": float(np.mean(self.planned_interruptions)),
            "lost_s_by_cause": dict(self.lost_s_by_cause),
            "unfinished": int(self.trials - np.count_nonzero(self.finished)),
            "wall_time_cap_s": self.cap_s,
        }


def _cycles(work_s: float, interval_s: float, checkpoint_s: float) -> tuple[int, float]:
    """Checkpoint cycles (the last one possibly short) and the length of the last one."""
    if work_s == 0:
        return 0, 0.0
    ratio = work_s / interval_s
    cycles = max(1, math.ceil(ratio - 1e-9 * ratio))  # 3 x tau must not round up to 4 cycles
    return cycles, work_s - (cycles - 1) * interval_s + checkpoint_s


def _cause_costs(inputs: ReliabilityInputs, causes: list[str]) -> FloatArray:
    """Downtime of one failure of each cause (its mean over causes is ``downtime_per_failure``)."""
    base = inputs.detection_s + inputs.restart_s + inputs.restore_s
    extra = {"spares": 0.0, "wait": inputs.repair_s, "elastic": inputs.repair_s / max(inputs.replicas, 1)}
    repair = extra[inputs.recovery]
    return np.array([base + (repair if cause in inputs.hardware_causes else 0.0) for cause in causes])


def expected_wall_time(inputs: ReliabilityInputs, work_s: float, interval_s: float) -> float:
    """Exact mean wall time of the process :func:`simulate` samples (no cap).

    Each checkpoint cycle of length ``T`` takes ``expm1(lambda T) / lambda`` of running time on
    average (restarted from its checkpoint at every failure), and every interruption's downtime
    is stretched by those arriving during it to ``d / (1 - rho)``. To first order in
    ``lambda T`` this is the closed form of Young (1974) / Daly (2006) in ``model.wall_time``.
    """
    _check(inputs, work_s, interval_s)
    lam = inputs.failure_rate
    rho = lam * inputs.downtime_per_failure() + inputs.planned_rate * (inputs.restart_s + inputs.restore_s)
    if rho >= 1.0:
        return math.inf
    cycles, last = _cycles(work_s, interval_s, inputs.checkpoint_write_s)
    if cycles == 0:
        return 0.0
    if lam == 0:
        running = work_s + cycles * inputs.checkpoint_write_s
    else:
        period = interval_s + inputs.checkpoint_write_s
        running = ((cycles - 1) * math.expm1(lam * period) + math.expm1(lam * last)) / lam
    return running / (1.0 - rho)


def _check(inputs: ReliabilityInputs, work_s: float, interval_s: float) -> None:
    if not (math.isfinite(work_s) and work_s >= 0):
        raise SpecError("work", work_s, "must be a finite number of seconds >= 0")
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise SpecError("--checkpoint-interval", interval_s, "must be a finite number of seconds > 0")
    if any(not (math.isfinite(rate) and rate >= 0) for rate in inputs.cause_rates.values()):
        raise SpecError("cause_rates", inputs.cause_rates, "must be finite and >= 0")
    if not (math.isfinite(inputs.planned_rate) and inputs.planned_rate >= 0):
        raise SpecError("planned_rate", inputs.planned_rate, "must be finite and >= 0")
    for name in ("detection_s", "restart_s", "restore_s", "checkpoint_write_s", "repair_s"):
        value = getattr(inputs, name)
        if not (math.isfinite(value) and value >= 0):
            raise SpecError(name, value, "must be finite and >= 0 seconds")


def _block_size(remaining_cycles: float, cycle_hazard: float, limit: int) -> int:
    """Failures to draw for the active trials: enough for nearly all to finish, at most ``limit``."""
    per_cycle = math.expm1(min(cycle_hazard, 700.0))  # mean failures per cycle
    expected = (remaining_cycles + 1.0) * per_cycle
    spread = math.sqrt(expected * (per_cycle + 1.0))  # sum of geometric counts
    return math.ceil(min(float(limit), max(16.0, expected + 4.0 * spread + 16.0)))


@dataclass
class _Block:
    """What one block of failure intervals did to each active trial (running-time units of 1/lambda)."""

    failures: IntArray
    running: FloatArray  # running time spent (training, checkpoints, lost work)
    lost: FloatArray  # running time lost to failures (work and partial checkpoints since the last one)
    cycles: FloatArray  # checkpoint cycles completed (unfinished trials)
    done: BoolArray


def _running_block(rng: np.random.Generator, remaining: FloatArray, block: int, period: float,
                   last: float, buffer: FloatArray) -> _Block:
    """Sample ``block`` failure intervals for each trial; times in units of 1/lambda.

    ``remaining`` counts the full cycles (of length ``period``) each trial must still complete
    before its last one (of length ``last``). The matrix is processed in cache-sized row chunks.
    """
    m = remaining.size
    out = _Block(failures=np.full(m, block, dtype=np.int64), running=np.empty(m), lost=np.empty(m),
                 cycles=np.empty(m), done=np.zeros(m, dtype=np.bool_))
    inverse = 1.0 / period
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // block)
    for start in range(0, m, rows_per_chunk):
        stop = min(m, start + rows_per_chunk)
        rows = stop - start
        x = buffer[: rows * block].reshape(rows, block)
        rng.standard_exponential(out=x)
        cycles = np.multiply(x, inverse)
        np.floor(cycles, out=cycles)
        done_cycles = cycles.sum(axis=1)
        total = x.sum(axis=1)
        out.running[start:stop] = total
        out.lost[start:stop] = total - done_cycles * period
        out.cycles[start:stop] = done_cycles
        # A trial can only finish in this block if it completes its remaining full cycles here
        # (its last interval then also covers the short last cycle); the + 1 absorbs rounding.
        candidate = np.flatnonzero(done_cycles + 1.0 >= remaining[start:stop])
        if candidate.size == 0:
            continue
        xc, cc = x[candidate], cycles[candidate]
        before_cycles = np.cumsum(cc, axis=1)
        before_cycles -= cc  # cycles completed before each interval
        target = remaining[start:stop][candidate] * period + last  # running time still needed
        hit = before_cycles * period + xc >= target[:, None]
        first = hit.argmax(axis=1)
        index = np.arange(candidate.size)
        finished = hit[index, first]
        if not finished.any():
            continue
        before = np.cumsum(xc, axis=1)[index, first] - xc[index, first]  # intervals before the last
        k_before = before_cycles[index, first]
        rows_done = start + candidate[finished]
        out.done[rows_done] = True
        out.failures[rows_done] = first[finished]
        out.running[rows_done] = (before + target - k_before * period)[finished]
        out.lost[rows_done] = (before - k_before * period)[finished]
    return out


def _downtime(rng: np.random.Generator, initial: FloatArray, lam: float, mu: float, probs: FloatArray,
              costs: FloatArray, planned_cost: float, budget: FloatArray) -> tuple[FloatArray, IntArray, IntArray]:
    """Total downtime started by ``initial`` seconds of downtime per trial, with the unexpected and
    planned interruptions that arrive during it (generation by generation). Trials whose downtime
    passes ``budget`` are left there (above the budget). Returns downtime, failures during downtime
    by cause (trials, causes) and planned interruptions during downtime."""
    total = initial.copy()
    by_cause = np.zeros((initial.size, probs.size), dtype=np.int64)
    planned = np.zeros(initial.size, dtype=np.int64)
    if lam == 0 and mu == 0:
        return total, by_cause, planned
    current = initial.copy()
    index = np.flatnonzero((current > 0) & (total <= budget))
    generation = 0
    while index.size:
        generation += 1
        if generation > _MAX_GENERATIONS:
            total[index] = math.inf
            break
        span = current[index]
        added = np.zeros(index.size)
        if lam > 0:
            counts = rng.multinomial(rng.poisson(lam * span), probs)
            by_cause[index] += counts
            added += counts @ costs
        if mu > 0:
            maintenance = rng.poisson(mu * span)
            planned[index] += maintenance
            added += maintenance * planned_cost
        total[index] += added
        current[index] = added
        index = index[(added > 0) & (total[index] <= budget[index])]
    return total, by_cause, planned


def simulate(inputs: ReliabilityInputs, work_s: float, interval_s: float, trials: int, seed: int = 0,
             max_failures_per_block: int = 4096, *, cap_factor: float = 100.0) -> MonteCarloResult:
    """Replay ``trials`` training runs of ``work_s`` seconds of useful (failure-free) training,
    checkpointing every ``interval_s`` seconds of training, with random interruptions.

    See the module docstring for what is sampled: failure times (exponential, Poisson process
    over the wall time), causes (in proportion to ``cause_rates``), lost work since the last
    checkpoint, planned interruptions; downtime per ``inputs`` as in the closed form (Young 1974;
    Daly 2006). Same ``seed`` and arguments, same results. Trials whose wall time exceeds
    ``cap_factor`` times the failure-free time stop there, unfinished (``wall_time_s`` inf).
    """
    _check(inputs, work_s, interval_s)
    if trials < 1:
        raise SpecError("--trials", trials, "must be >= 1")
    if max_failures_per_block < 1:
        raise SpecError("max_failures_per_block", max_failures_per_block, "must be >= 1")
    if not cap_factor >= 1:
        raise SpecError("cap_factor", cap_factor, "must be >= 1")
    rng = np.random.default_rng(seed)
    causes = list(inputs.cause_rates)
    rates = np.array([inputs.cause_rates[cause] for cause in causes], dtype=np.float64)
    lam = float(rates.sum())
    probs = rates / lam if lam > 0 else np.full(len(causes), 1.0 / max(len(causes), 1))
    costs = _cause_costs(inputs, causes)
    mu = inputs.planned_rate
    planned_cost = inputs.restart_s + inputs.restore_s
    checkpoint = inputs.checkpoint_write_s
    cycles, last = _cycles(work_s, interval_s, checkpoint)
    failure_free = work_s + cycles * checkpoint
    cap = cap_factor * failure_free

    wall = np.zeros(trials)
    interruptions = np.zeros(trials, dtype=np.int64)
    planned = np.zeros(trials, dtype=np.int64)
    finished = np.zeros(trials, dtype=np.bool_)
    lost_work = np.zeros(len(causes))  # summed over trials
    failures_by_cause = np.zeros(len(causes), dtype=np.int64)  # summed over trials
    planned_total = 0

    def account(active: IntArray, failures: IntArray, running_s: FloatArray, lost_s: FloatArray) -> None:
        """Causes, planned interruptions and downtime of one block of running time per active trial."""
        nonlocal planned_total
        counts = rng.multinomial(failures, probs) if lam > 0 else np.zeros((active.size, len(causes)), np.int64)
        maintenance = rng.poisson(mu * running_s) if mu > 0 else np.zeros(active.size, dtype=np.int64)
        # Lost work goes to causes in proportion to each trial's failure counts: the exact
        # expectation given the counts (failures are exchangeable), so means by cause are unbiased.
        lost_work[:] += (counts * (lost_s / np.maximum(failures, 1))[:, None]).sum(axis=0)
        initial = counts @ costs + maintenance * planned_cost
        down, during, planned_during = _downtime(rng, initial, lam, mu, probs, costs, planned_cost,
                                                 cap - wall[active] - running_s)
        failures_by_cause[:] += counts.sum(axis=0) + during.sum(axis=0)
        planned_total += int(maintenance.sum() + planned_during.sum())
        interruptions[active] += failures + during.sum(axis=1)
        planned[active] += maintenance + planned_during
        wall[active] += running_s + down

    if cycles == 0:
        finished[:] = True
    elif lam == 0:  # no failures: the failure-free schedule, plus any planned interruptions
        active = np.arange(trials)
        zero = np.zeros(trials, dtype=np.int64)
        account(active, zero, np.full(trials, failure_free), np.zeros(trials))
        finished[:] = wall <= cap
    else:
        mtbf = 1.0 / lam
        period = lam * (interval_s + checkpoint)  # in units of the mean time between failures
        last_n = lam * last
        remaining = np.full(trials, float(cycles - 1))
        active = np.arange(trials)
        buffer = np.empty(_CHUNK_ELEMENTS + max_failures_per_block)
        while active.size:
            block = _block_size(float(remaining[active].max()), period, max_failures_per_block)
            result = _running_block(rng, remaining[active], block, period, last_n, buffer)
            running_s = result.running * mtbf
            done = result.done
            if done.any():  # the schedule's remainder in seconds: exact for a failure-free trial
                left = failure_free - (cycles - 1 - remaining[active][done]) * (interval_s + checkpoint)
                running_s[done] = result.lost[done] * mtbf + left
            account(active, result.failures, running_s, result.lost * mtbf)
            remaining[active] -= result.cycles
            over = wall[active] > cap
            finished[active[done & ~over]] = True
            active = active[~(done | over)]
    wall[~finished] = math.inf
    lost = {cause: float(lost_work[i] + failures_by_cause[i] * costs[i]) / trials for i, cause in enumerate(causes)}
    if mu > 0:
        lost[PLANNED] = planned_total * planned_cost / trials
    for array in (wall, interruptions, planned, finished):
        array.flags.writeable = False
    return MonteCarloResult(work_s=float(work_s), interval_s=float(interval_s), wall_time_s=wall,
                            interruptions=interruptions, planned_interruptions=planned, lost_s_by_cause=lost,
                            finished=finished, cap_s=cap)
