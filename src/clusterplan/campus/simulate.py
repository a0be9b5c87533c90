"""The campus hour by hour, vectorised: serving demand -> serving chips -> what training gets
-> tokens, MW, MWh, $ and CO2, under one allocation policy.

Hour 0 is Monday 00:00, campus local time. Every step below is a NumPy operation over all hours
(and models, jobs, sizes: a handful each), so a year at hourly resolution is a few arrays of 8,760.

1. **Demand** of model m at hour h: ``peak x diurnal[h mod 24] x weekly[day mod 7] x (1 + growth)
   ^ (h / 730.5)``, the shapes normalised to a maximum of 1 (``scenario.py``).
2. **Serving chips needed** at the SLO: ``ceil(demand / rate per replica) x chips per replica``
   (``sizing.py``); the policy's **reserve** adds the headroom: ``ceil(demand x (1 + headroom) /
   rate)`` replicas,
   - ``slo-aware``: that reserve, every hour; training yields exactly the rest;
   - ``shared`` (the reported practice: serving by day, training at night): each block of day
     hours or of night hours holds the block's largest reserve; training runs in night blocks only
     and pauses by day;
   - ``dedicated``: the largest reserve of the whole run, every hour (a fixed split).
   If reserves exceed the campus, each model gets its share of the campus in whole replicas.
3. **Training** takes what serving leaves, jobs in priority order: each the largest of its sizes
   that fits in the chips left and, with every other chip's power, in the campus envelope
   (``campus.power_w``). Chips no one holds are idle (powered, at idle draw).
4. **Resizes** (``np.diff`` of each job's size): stopping or shrinking or growing costs a checkpoint
   of the whole state to storage; starting or resuming at a size costs a restart and a re-sharded
   restore from storage (``sizing.py``). That time is charged in the hour it happens.
5. **Tokens**: a size's tokens/s x its goodput (failures, reliability closed form) x the share of
   the hour not spent resizing.
6. **SLO attainment**: the share of the demand's output tokens that the reserved replicas can
   serve at the SLO (``min(1, capacity / demand)``; hourly means: the headroom stands for the
   variation within an hour).
7. **Power**: ``chips x base + dynamic x activity`` per chip (``sizing.ChipPower``), facility x PUE;
   energy at the hour's price and carbon intensity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from clusterplan.campus.scenario import HOURS_PER_MONTH
from clusterplan.campus.sizing import Sizing
from clusterplan.costs.power import WAITING_ACTIVITY
from clusterplan.errors import SpecError
from clusterplan.specs.scenario import CampusSimulation

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class PolicyRun:
    """One policy's hourly arrays (shape ``(hours,)`` unless said); SI units, tokens and chips."""

    policy: str
    demand: FloatArray  # (models, hours) output tokens/s
    required_chips: IntArray  # (models, hours) at the SLO, no headroom
    serving_chips: IntArray  # (models, hours)
    served_tokens: FloatArray  # (models, hours) output tokens served within the SLO in the hour
    training_chips: IntArray  # (jobs, hours)
    training_tokens: FloatArray  # (jobs, hours)
    resize_s: FloatArray  # (jobs, hours) seconds lost to resizes
    resizes: IntArray  # (jobs,) size changes
    idle_chips: IntArray
    it_w: FloatArray
    facility_w: FloatArray
    serving_it_w: FloatArray
    training_it_w: FloatArray
    price_usd_per_kwh: FloatArray
    carbon_kg_per_kwh: FloatArray

    @property
    def hours(self) -> int:
        return int(self.idle_chips.size)

    def slo_attainment(self) -> FloatArray:
        """Share of each hour's demanded output tokens served within the SLO (1 with no demand)."""
        demand = self.demand.sum(axis=0) * 3600.0
        served = self.served_tokens.sum(axis=0)
        return np.where(demand > 0, served / np.where(demand > 0, demand, 1.0), 1.0)


def demand_profile(section: CampusSimulation, hours: int) -> FloatArray:
    """Output tokens/s of each served model, hour by hour (step 1 of the module doc)."""
    h = np.arange(hours)
    out = np.empty((len(section.serving), hours))
    for m, spec in enumerate(section.serving):
        diurnal = np.asarray(spec.diurnal) / max(spec.diurnal)
        weekly = np.asarray(spec.weekly) / max(spec.weekly)
        growth = (1.0 + spec.growth_per_month) ** (h / HOURS_PER_MONTH)
        out[m] = spec.peak_demand * diurnal[h % 24] * weekly[(h // 24) % 7] * growth
    return out


def night_mask(section: CampusSimulation, hours: int) -> NDArray[np.bool_]:
    hour = np.arange(hours) % 24
    start, end = section.night_start, section.night_end
    return (hour >= start) & (hour < end) if start < end else (hour >= start) | (hour < end)


def _block_max(values: IntArray, blocks: NDArray[np.bool_]) -> IntArray:
    """Each run of equal ``blocks`` values gets the largest of ``values`` in it (last axis)."""
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    peaks = np.maximum.reduceat(values, starts, axis=-1)
    lengths = np.diff(np.r_[starts, blocks.size])
    return np.repeat(peaks, lengths, axis=-1)


def serving_activity(sizing: Sizing, served: FloatArray, chips: IntArray) -> FloatArray:
    """``inference/capacity.py: serving_activity`` per model and hour: the achieved share of peak
    FLOP/s (2 FLOPs per active parameter per input and output token served) plus WAITING_ACTIVITY
    of the rest, for ``served`` output tokens/s on ``chips`` chips (models x hours)."""
    params = np.array([s.active_params for s in sizing.serving])[:, None]
    peak = np.array([s.peak_flops_per_chip for s in sizing.serving])[:, None]
    io = np.array([(s.input_tokens + s.output_tokens) / s.output_tokens for s in sizing.serving])[:, None]
    used: FloatArray = np.minimum(1.0, 2.0 * params * served * io / np.maximum(chips * peak, 1.0))
    activity: FloatArray = used + WAITING_ACTIVITY * (1.0 - used)
    return activity


def simulate(policy: str, section: CampusSimulation, sizing: Sizing, campus_chips: int, envelope_w: float,
             hours: int, price: FloatArray, carbon: FloatArray) -> PolicyRun:
    """One policy over ``hours`` hours (module doc); ``price`` and ``carbon`` per local hour (24)."""
    demand = demand_profile(section, hours)
    cpr = np.array([s.chips_per_replica for s in sizing.serving], dtype=np.int64)[:, None]
    rate = np.array([s.output_tokens_per_s_per_replica for s in sizing.serving])[:, None]
    required = np.ceil(demand / rate - 1e-9).astype(np.int64) * cpr
    reserve = np.ceil(demand * (1.0 + section.headroom) / rate - 1e-9).astype(np.int64)  # replicas
    night = night_mask(section, hours)
    if policy == "shared":
        reserve = _block_max(reserve, night)
    elif policy == "dedicated":
        reserve = np.broadcast_to(reserve.max(axis=1, keepdims=True), reserve.shape).copy()
    elif policy != "slo-aware":
        raise SpecError("--policy", policy, "must be shared, dedicated or slo-aware")
    serving = reserve * cpr
    total = serving.sum(axis=0)
    over = total > campus_chips
    if over.any():  # each model its share of the campus, in whole replicas
        share = np.where(over, campus_chips / np.maximum(total, 1), 1.0)
        serving = np.floor(reserve * share).astype(np.int64) * cpr
        total = serving.sum(axis=0)
    capacity = serving // cpr * rate  # output tokens/s at the SLO
    served = np.minimum(capacity, demand)
    activity = serving_activity(sizing, served, serving)
    power = sizing.power
    serving_dynamic = power.dynamic_w * (serving * activity).sum(axis=0)
    base = campus_chips * power.base_w
    budget = envelope_w / power.pue - base - serving_dynamic  # dynamic watts left for training
    if np.any(budget < -1e-6):
        worst = int(np.argmin(budget))
        raise SpecError("scenario.campus.power_w", envelope_w,
                        f"the campus at idle plus serving at hour {worst} draws "
                        f"{(base + serving_dynamic[worst]) * power.pue / 1e6:,.0f} MW facility: more than the envelope")
    left = campus_chips - total
    if policy == "shared":
        left = np.where(night, left, 0)
    jobs = len(sizing.training)
    train_chips = np.zeros((jobs, hours), dtype=np.int64)
    tokens = np.zeros((jobs, hours))
    lost = np.zeros((jobs, hours))
    resizes = np.zeros(jobs, dtype=np.int64)
    train_dynamic = np.zeros(hours)
    for j, job in enumerate(sizing.training):
        chips = np.array([lv.chips for lv in job.levels], dtype=np.int64)
        watts = chips * np.array([lv.activity for lv in job.levels]) * power.dynamic_w
        fits = (chips[:, None] <= left[None, :]) & (watts[:, None] <= budget[None, :] + 1e-6)
        index = (fits * np.arange(1, chips.size + 1)[:, None]).max(axis=0) - 1  # largest size that fits
        held = np.where(index >= 0, chips[np.maximum(index, 0)], 0)
        before = np.r_[held[0], held[:-1]]  # hour 0 starts at its size: no resize charged
        changed = held != before
        restart = np.array([lv.restart_s for lv in job.levels])[np.maximum(index, 0)]
        # a resize: checkpoint, restart, re-sharded restore in the new hour; a pause: the
        # checkpoint in the last hour before it; a resume: restart and restore
        seconds = np.where(changed & (held > 0), restart + job.restore_s, 0.0)
        seconds += np.where(changed & (held > 0) & (before > 0), job.checkpoint_s, 0.0)
        paused = np.flatnonzero(changed & (held == 0))
        seconds[paused - 1] += job.checkpoint_s  # paused >= 1: hour 0 never changes
        seconds = np.minimum(seconds, 3600.0)
        productive = np.where(held > 0, 1.0 - seconds / 3600.0, 0.0)
        speed = np.array([lv.tokens_per_s * lv.goodput for lv in job.levels])[np.maximum(index, 0)]
        train_chips[j], lost[j], resizes[j] = held, seconds, int(changed.sum())
        tokens[j] = np.where(held > 0, speed * 3600.0 * productive, 0.0)
        dynamic = np.where(held > 0, watts[np.maximum(index, 0)] * productive, 0.0)
        train_dynamic += dynamic
        left = left - held
        budget = budget - dynamic
    idle = campus_chips - total - train_chips.sum(axis=0)
    it = base + serving_dynamic + train_dynamic
    hour = np.arange(hours) % 24
    return PolicyRun(policy, demand, required, serving, served * 3600.0, train_chips, tokens, lost, resizes,
                     idle.astype(np.int64), it, it * power.pue,
                     serving.sum(axis=0) * power.base_w + serving_dynamic,
                     train_chips.sum(axis=0) * power.base_w + train_dynamic,
                     price[hour], carbon[hour])
