"""Monte Carlo replay of a training run with random interruptions (issue #5, item 4; issue #14).

The sampled process is the one ``model.py`` describes (its module doc), without averaging:

* Useful work ``U`` proceeds in segments of ``tau`` seconds, each followed by a checkpoint that
  blocks training for ``C`` seconds; the last segment is shorter when ``tau`` does not divide
  ``U``, and is checkpointed too, so a failure-free run takes exactly ``U + ceil(U / tau) C``.
* Interruptions arrive as Poisson processes over the whole wall time: unexpected ones by cause
  (rates ``cause_rates``), planned ones at ``planned_rate``. While the job runs, a *rollback*
  failure loses the time since the last completed checkpoint (sampled, not the mean ``(tau +
  C)/2``); an absorbed one (elastic continuation) and a planned one lose nothing. Each starts an
  outage of its own length ``S_k`` (``ReliabilityInputs.outage_s``).
* An interruption during an outage folds into it: the outage ends at ``max(end, arrival +
  S_k)`` (without folding, ``fold=False``: ``end + S_k``), and loses no work. The mean wall time
  is then exactly the closed form's ``model.wall_time`` (running time x ``exp(rho)``, or ``1 /
  (1 - rho)`` without folding): the two agree to sampling error at every scale.

How it is sampled, vectorised over trials. The rollback failures form a Poisson process of rate
``lambda_r`` in the job's own running time (memoryless), so each trial draws, a block of
``max_failures_per_block`` at a time, a (trials, block) matrix of exponential running times
between rollbacks ``X``; an interval completes ``floor(X / (tau + C))`` checkpoint segments;
cumulative sums along the block find where the remaining work fits, and the trial finishes there.
Unfinished trials carry to the next block. Each block's rollbacks get causes (multinomial); the
absorbed and planned interruptions in its running time a Poisson count split by cause. Every one
of them starts an outage; an outage of length ``S`` sees no other interruption with probability
``exp(-Lambda S)`` (a binomial draw per trial and kind settles those at once); the others are
replayed arrival by arrival, vectorised over all of them, in chunks. Lost work and outage time
are charged to causes: an arrival is charged the time it adds (its whole outage when it starts
one, its extension when it folds), so work + checkpoints + the charges is the wall time. Python
loops run per block, per chunk and per arrival within an outage, never per trial.

The work is bounded: ``trials x (expected interruptions per run + 16)`` must stay under
:data:`MAX_EVENTS` (refused otherwise, before anything is sampled), and trials whose wall time
passes ``cap_factor`` times the larger of the failure-free time and the closed form's mean are
stopped and marked unfinished (wall time ``inf``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from clusterplan.errors import SpecError
from clusterplan.reliability.model import ReliabilityInputs, segments, wall_time

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

#: Key of the planned (maintenance) interruptions' downtime in ``lost_s_by_cause``.
PLANNED = "planned"
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
#: Elements of one (rows, block) chunk of the failure matrix: small enough to stay in cache.
_CHUNK_ELEMENTS = 1 << 16
#: Folded arrivals replayed per chunk of outages (bounds the memory of one chunk).
_OUTAGE_CHUNK = 1 << 18
#: Arrivals within one outage before it is declared never-ending (the wall-time cap comes first).
_MAX_ARRIVALS_PER_OUTAGE = 1_000_000
#: Most sampled events (interruptions, plus 16 per trial) one simulation may need on average:
#: about 10 s on one core.
MAX_EVENTS = 100_000_000
_EVENTS_PER_TRIAL = 16.0


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


def expected_wall_time(inputs: ReliabilityInputs, work_s: float, interval_s: float) -> float:
    """Exact mean wall time of the process :func:`simulate` samples (no cap): the closed form,
    ``model.wall_time`` (renewal argument; Daly 2006; folded outages as M/G/infinity busy periods)."""
    _check(inputs, work_s, interval_s)
    return wall_time(inputs, work_s, interval_s)


def expected_events(inputs: ReliabilityInputs, work_s: float, interval_s: float) -> float:
    """Mean number of interruptions (unexpected and planned, folded ones included) in one run."""
    wall = wall_time(inputs, work_s, interval_s)
    rate = inputs.failure_rate + inputs.planned_rate
    return 0.0 if rate == 0 or wall == 0 else rate * wall


def check_budget(inputs: ReliabilityInputs, work_s: float, interval_s: float, trials: int) -> None:
    """Refuse a simulation that would sample more than :data:`MAX_EVENTS` events on average."""
    per_trial = expected_events(inputs, work_s, interval_s)
    if not math.isfinite(per_trial):
        raise SpecError("--trials", trials, "failures outpace recovery: a run never ends, there is nothing to "
                                            "sample (drop --trials; the closed form says so)")
    needed = trials * (per_trial + _EVENTS_PER_TRIAL)
    if needed > MAX_EVENTS:
        raise SpecError("--trials", trials,
                        f"{trials:,} trials x ~{per_trial:,.3g} interruptions each exceed the Monte Carlo "
                        f"budget of {MAX_EVENTS:,} sampled events; use fewer trials or a shorter run")


def _check(inputs: ReliabilityInputs, work_s: float, interval_s: float) -> None:
    if not (math.isfinite(work_s) and work_s >= 0):
        raise SpecError("work", work_s, "must be a finite number of seconds >= 0")
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise SpecError("--checkpoint-interval", interval_s, "must be a finite number of seconds > 0")
    if any(not (math.isfinite(rate) and rate >= 0) for rate in inputs.cause_rates.values()):
        raise SpecError("cause_rates", inputs.cause_rates, "must be finite and >= 0")
    if not (math.isfinite(inputs.planned_rate) and inputs.planned_rate >= 0):
        raise SpecError("planned_rate", inputs.planned_rate, "must be finite and >= 0")
    for name in ("detection_s", "restart_s", "restore_s", "checkpoint_write_s", "repair_s", "swap_s",
                 "elastic_pause_s", "step_s", "lost_copy_s"):
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


def _outages(rng: np.random.Generator, starts: IntArray, services: FloatArray, probs: FloatArray, rate: float,
             fold: bool, budget: FloatArray) -> tuple[FloatArray, IntArray, FloatArray]:
    """Outages started by ``starts[trial, kind]`` interruptions, with the interruptions that
    arrive during them (rate ``rate``, kinds drawn from ``probs``) folded in (or added, without
    ``fold``). Returns the outage time per trial, the folded arrivals per (trial, kind) and the
    seconds charged to each kind. A trial whose outage time passes ``budget`` stops there."""
    trials, kinds = starts.shape
    down = starts @ services
    charge = (starts * services[None, :]).sum(axis=0)
    folded = np.zeros((trials, kinds), dtype=np.int64)
    if rate == 0 or not starts.any():
        return down, folded, charge
    busy = starts - rng.binomial(starts, np.exp(-rate * services)[None, :])  # see an arrival before the end
    per_trial = busy.sum(axis=1)
    if not per_trial.any():
        return down, folded, charge
    cumulative = np.cumsum(per_trial)
    cuts = np.searchsorted(cumulative, np.arange(_OUTAGE_CHUNK, int(cumulative[-1]), _OUTAGE_CHUNK), side="right")
    bounds = [0, *sorted(set(int(c) for c in cuts)), trials]
    thresholds = np.cumsum(probs)
    thresholds[-1] = 1.0
    for first, stop in itertools.pairwise(bounds):
        rows = busy[first:stop].ravel()
        ids = np.repeat(np.arange(rows.size), rows)
        if ids.size == 0:
            continue
        owner = first + ids // kinds
        initial = services[ids % kinds]
        # the first arrival, conditioned on coming before the outage's own end
        bound = -np.expm1(-rate * initial)
        arrival = -np.log1p(-rng.random(ids.size) * bound) / rate
        remaining = initial - arrival
        for _ in range(_MAX_ARRIVALS_PER_OUTAGE):
            kind = np.minimum(np.searchsorted(thresholds, rng.random(owner.size), side="right"), kinds - 1)
            service = services[kind]
            if fold:
                added = np.maximum(service - remaining, 0.0)
                remaining = np.maximum(remaining, service)
            else:
                added = service
                remaining = remaining + service
            down += np.bincount(owner, weights=added, minlength=trials)
            charge += np.bincount(kind, weights=added, minlength=kinds)
            folded += np.bincount(owner * kinds + kind, minlength=trials * kinds).reshape(trials, kinds)
            gap = rng.standard_exponential(owner.size) / rate
            more = (gap < remaining) & (down[owner] <= budget[owner])
            if not more.any():
                break
            owner, remaining = owner[more], remaining[more] - gap[more]
        else:
            down[np.unique(owner)] = math.inf
    return down, folded, charge


def simulate(inputs: ReliabilityInputs, work_s: float, interval_s: float, trials: int, seed: int = 0,
             max_failures_per_block: int = 4096, *, cap_factor: float = 100.0) -> MonteCarloResult:
    """Replay ``trials`` training runs of ``work_s`` seconds of useful (failure-free) training,
    checkpointing every ``interval_s`` seconds of training, with random interruptions.

    See the module docstring for what is sampled (the process of ``model.py``: Young 1974, Daly
    2006, outages folded as M/G/infinity busy periods). Same ``seed`` and arguments, same
    results. Refused (:class:`SpecError`) when it would sample more than :data:`MAX_EVENTS`
    events on average. Trials whose wall time exceeds ``cap_factor`` times the larger of the
    failure-free time and the mean stop there, unfinished (``wall_time_s`` inf).
    """
    _check(inputs, work_s, interval_s)
    if trials < 1:
        raise SpecError("--trials", trials, "must be >= 1")
    if max_failures_per_block < 1:
        raise SpecError("max_failures_per_block", max_failures_per_block, "must be >= 1")
    if not cap_factor >= 1:
        raise SpecError("cap_factor", cap_factor, "must be >= 1")
    check_budget(inputs, work_s, interval_s, trials)
    rng = np.random.default_rng(seed)
    causes = list(inputs.cause_rates)
    names = [*causes, PLANNED]
    rates = np.array([inputs.cause_rates[cause] for cause in causes] + [inputs.planned_rate], dtype=np.float64)
    services = np.array([inputs.outage_s(cause) for cause in causes] + [inputs.planned_outage_s])
    rollback = np.array([not inputs.absorbs(cause) for cause in causes] + [False])
    total = float(rates.sum())
    probs = rates / total if total > 0 else np.full(rates.size, 1.0 / rates.size)
    rolled, other = np.flatnonzero(rollback), np.flatnonzero(~rollback)
    lam, lam_other = float(rates[rolled].sum()), float(rates[other].sum())
    probs_rolled = rates[rolled] / lam if lam > 0 else np.zeros(rolled.size)
    probs_other = rates[other] / lam_other if lam_other > 0 else np.zeros(other.size)
    checkpoint = inputs.checkpoint_write_s
    count, last = segments(work_s, interval_s, checkpoint)
    failure_free = work_s + count * checkpoint
    mean = wall_time(inputs, work_s, interval_s)
    cap = cap_factor * max(failure_free, mean)

    wall = np.zeros(trials)
    interruptions = np.zeros(trials, dtype=np.int64)
    planned = np.zeros(trials, dtype=np.int64)
    finished = np.zeros(trials, dtype=np.bool_)
    lost_work = np.zeros(rates.size)  # summed over trials
    charged = np.zeros(rates.size)  # outage seconds, summed over trials

    def account(active: IntArray, rollbacks: IntArray, running_s: FloatArray, lost_s: FloatArray) -> None:
        """Interruptions and outages of one stretch of running time per active trial."""
        starts = np.zeros((active.size, rates.size), dtype=np.int64)
        if lam > 0:
            starts[:, rolled] = rng.multinomial(rollbacks, probs_rolled)
            # Lost work goes to causes in proportion to each trial's rollback counts: the exact
            # expectation given the counts (failures are exchangeable), so means by cause are unbiased.
            lost_work[rolled] += (starts[:, rolled] * (lost_s / np.maximum(rollbacks, 1))[:, None]).sum(axis=0)
        if lam_other > 0:
            starts[:, other] = rng.multinomial(rng.poisson(lam_other * running_s), probs_other)
        down, folded, charge = _outages(rng, starts, services, probs, total, inputs.fold,
                                        cap - wall[active] - running_s)
        charged[:] += charge
        happened = starts + folded
        interruptions[active] += happened[:, :-1].sum(axis=1)
        planned[active] += happened[:, -1]
        wall[active] += running_s + down

    if count == 0:
        finished[:] = True
    elif lam == 0:  # nothing rolls back: the failure-free schedule, plus the outages
        active = np.arange(trials)
        zero = np.zeros(trials, dtype=np.int64)
        account(active, zero, np.full(trials, failure_free), np.zeros(trials))
        finished[:] = wall <= cap
    else:
        mtbf = 1.0 / lam
        period = lam * (interval_s + checkpoint)  # in units of the mean time between rollbacks
        last_n = lam * last
        remaining = np.full(trials, float(count - 1))
        active = np.arange(trials)
        buffer = np.empty(_CHUNK_ELEMENTS + max_failures_per_block)
        while active.size:
            block = _block_size(float(remaining[active].max()), period, max_failures_per_block)
            result = _running_block(rng, remaining[active], block, period, last_n, buffer)
            running_s = result.running * mtbf
            done = result.done
            if done.any():  # the schedule's remainder in seconds: exact for a failure-free trial
                left = failure_free - (count - 1 - remaining[active][done]) * (interval_s + checkpoint)
                running_s[done] = result.lost[done] * mtbf + left
            account(active, result.failures, running_s, result.lost * mtbf)
            remaining[active] -= result.cycles
            over = wall[active] > cap
            finished[active[done & ~over]] = True
            active = active[~(done | over)]
    wall[~finished] = math.inf
    lost = {name: float(lost_work[i] + charged[i]) / trials for i, name in enumerate(names)}
    if inputs.planned_rate == 0:
        del lost[PLANNED]
    for array in (wall, interruptions, planned, finished):
        array.flags.writeable = False
    return MonteCarloResult(work_s=float(work_s), interval_s=float(interval_s), wall_time_s=wall,
                            interruptions=interruptions, planned_interruptions=planned, lost_s_by_cause=lost,
                            finished=finished, cap_s=cap)
