"""Plan search: enumerate every valid plan as arrays, prune exactly, time the rest, rank.

The space is TP x CP x PP (with balanced layer splits, Llama 3 style: lighter first and last
stages when the layers do not divide) x VP x DP x EP x micro-batch x recompute x ZeRO x
precision. Nothing is a Python object per plan: candidates are NumPy columns built by
broadcasting small per-axis lists and masking invalid combinations.

Pruning is exact — it can never drop the best plan:

1. *Memory*: a candidate whose memory exceeds the budget is infeasible; memory is computed for
   every candidate (cheap) before any step time is.
2. *Recompute dominance*: recomputation only adds work (it changes neither communication nor
   the schedule), so among candidates that differ only in recompute, the least recompute that
   fits is at least as fast, as cheap and as frugal as the others; the others are not timed.
   (``tests/test_search.py`` checks both against exhaustive evaluation.)
3. *Sequence parallelism* is always on with TP > 1: it moves the same bytes as the all-reduce
   it replaces and divides the replicated activations and elementwise work by TP.

Objectives: ``time`` (step time, hence time to train), ``cost`` (chip-hours per step: the
power/cost model is a later issue, so chip time is the cost), ``energy`` (chip-hours x TDP, an
upper bound until the power model lands).

Shapes: by default a job uses whole allocation units — scale-up domains (DGX/HGX nodes, 64-chip
Trn2 UltraServers, a TPU v5e pod), or the sourced smaller units of the catalog (the 64-chip
cubes of TPU v4/v5p slices, 64-GPU segments of NVL72 racks): ``System.allocation_size`` — and
TP divides the unit, so no TP group straddles two domains; ``SearchSpace.any_shape`` lifts both
rules.

Constraints (:class:`Constraints`): a deadline on the time to train the tokens, a budget on the
cost of the run (TCO per chip-hour at the plan's activity x chip-hours, as ``train`` reports it)
and a cap on the chips. They are masks over the timed plans, like the objective: only plans
that meet all of them are ranked; when none does, ``SearchResult.unmet`` says why, with the
plan that came closest. Every ranked plan carries ``command``: the ``clusterplan train``
invocation that reproduces it (:mod:`clusterplan.training.command`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from clusterplan import units
from clusterplan.costs.power import WAITING_ACTIVITY
from clusterplan.errors import SpecError
from clusterplan.specs import Model, Plan
from clusterplan.specs.plan import (
    ATTENTION_KERNEL_CODES,
    DEFAULT_RECOMPUTE_MODULES,
    OFFLOAD_MODULE_BITS,
    PRECISION_CODES,
    RECOMPUTE_CODES,
    RECOMPUTE_MODULE_BITS,
    balanced_layer_split,
    check_offload_modules,
    check_recompute_modules,
)
from clusterplan.training import memory as mem
from clusterplan.training.batch import DEFAULT_ROUTING_GINI, PlanBatch, optimizer_state_bytes
from clusterplan.training.command import TrainTarget, format_tokens, train_command
from clusterplan.training.step import Hardware, estimate
from clusterplan.training.summary import train_record

IntArray = NDArray[np.int64]
Objective = Literal["time", "cost", "energy"]
COMPONENT_NAMES = {"compute": "compute", "tp_comm": "exposed TP comm", "cp_comm": "exposed CP comm",
                   "ep_comm": "exposed EP all-to-all", "pp_bubble": "pipeline bubble",
                   "pp_comm": "exposed PP sends", "dp_comm": "exposed DP reduction",
                   "zero3_comm": "exposed ZeRO-3/FSDP gathers",
                   "optimizer": "optimizer"}
CHUNK = 262_144  # plans timed per vectorised call (bounds peak memory)


@dataclass(frozen=True)
class SearchSpace:
    """What the search enumerates, and the framework settings every plan shares."""

    precisions: tuple[str, ...] = ("bf16",)
    recompute: tuple[str, ...] = ("none", "selective", "full")
    zero: tuple[int, ...] = (0, 1, 2, 3)
    max_tp: int = 64
    max_cp: int = 32
    max_pp: int = 128
    max_vp: int = 8
    max_micro_batch: int = 16
    chips_at_most: bool = False  # False: exactly `chips`; True: any count up to `chips`
    any_shape: bool = False  # False: whole scale-up domains, TP dividing one; True: any count and TP
    settings: dict[str, Any] = field(default_factory=lambda: {
        "overlap_tp": False, "overlap_dp": True, "overlap_pp": True, "flash_attention": True,
        "grad_reduce": Plan.model_fields["grad_reduce"].default})

    def validated(self) -> SearchSpace:
        for precision in self.precisions:
            if precision not in PRECISION_CODES or precision == "fp32":
                raise SpecError("--precision", precision, "must be bf16, fp8 or fp4")
        for level in self.recompute:
            if level not in RECOMPUTE_CODES:
                raise SpecError("--recompute", level, "must be none, selective or full")
        for stage in self.zero:
            if stage not in (0, 1, 2, 3):
                raise SpecError("--zero", stage, "must be 0, 1, 2 or 3")
        return self


def _usd(value: float) -> str:
    """Dollars as the constraints read them: ``$50M``."""
    return f"${units.format_count(value, 1).replace(' ', '')}"


@dataclass(frozen=True)
class Constraints:
    """What a plan must meet to be ranked (None: no limit). ``deadline_s`` bounds the
    failure-free time to train the search's tokens, ``budget_usd`` the cost of that run (TCO per
    chip-hour at the plan's activity x chip-hours, the ``cost_usd`` of ``train``), ``max_chips``
    the chips the plan uses. The first two need the tokens."""

    deadline_s: float | None = None
    budget_usd: float | None = None
    max_chips: int | None = None

    def validated(self, tokens: float | None) -> Constraints:
        for name, value, unit in (("--deadline", self.deadline_s, "s"), ("--budget", self.budget_usd, "USD")):
            if value is None:
                continue
            if not (np.isfinite(value) and value > 0):
                raise SpecError(name, value, f"must be > 0 {unit}")
            if tokens is None:
                raise SpecError(name, value, "needs the training tokens (--tokens, e.g. 15T)")
        if self.max_chips is not None and self.max_chips < 1:
            raise SpecError("--max-chips", self.max_chips, "must be >= 1")
        return self

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.deadline_s, self.budget_usd, self.max_chips))

    def record(self) -> dict[str, Any]:
        return {"deadline_s": self.deadline_s, "budget_usd": self.budget_usd, "max_chips": self.max_chips}

    def at_risk(self, record: dict[str, Any]) -> list[str]:
        """Where a plan that meets the deadline or budget at its point estimate does not at its
        error band (``record["bands"]``: the cross-validated errors of its regime,
        validation/bands.py): the limit inside the band (it may be missed) or below it (it is
        missed at every error the band covers). Empty when the bands clear every limit."""
        bands = record.get("bands", {})
        risks = []
        for limit, figure, what, fmt in ((self.deadline_s, "time_to_train_s", "deadline", units.format_duration),
                                         (self.budget_usd, "cost_usd", "budget", _usd)):
            band = bands.get(figure)
            if limit is None or not band or band[1] <= limit:
                continue
            low, high = band
            where = ("lies beyond" if low > limit else "straddles")
            verdict = ("missed at every cross-validated error" if low > limit else "it may be missed")
            risks.append(f"the {what} of {fmt(limit)}: the plan's range ({fmt(low)} to {fmt(high)}) "
                         f"{where} it; {verdict}")
        return risks


@dataclass(frozen=True)
class SearchResult:
    """The ranked plans (``best``: records as ``train --json`` gives them, plus ``why_not_best``
    and ``command``) and what the search did. ``unmet`` is empty unless plans fit in memory but
    none met the constraints: then it says which constraint failed and by how much, and
    ``nearest`` holds the records of the plans that came closest. ``allocation_unit_chips``: the
    whole units the plans' chips come in (1 with any shape)."""

    plans_enumerated: int
    plans_fitting: int
    plans_timed: int
    search_time_s: float
    objective: str
    best: list[dict[str, Any]]
    constraints: Constraints = field(default_factory=Constraints)
    plans_meeting_constraints: int = 0
    allocation_unit_chips: int = 1
    unmet: str = ""
    nearest: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        out = {"plans_enumerated": self.plans_enumerated, "plans_fitting": self.plans_fitting,
               "plans_timed": self.plans_timed, "search_time_s": self.search_time_s,
               "objective": self.objective, "constraints": self.constraints.record(),
               "plans_meeting_constraints": self.plans_meeting_constraints,
               "allocation_unit_chips": self.allocation_unit_chips, "best": self.best}
        if self.unmet:
            out.update({"unmet": self.unmet, "nearest": self.nearest})
        if self.best:  # the headline is the best plan: its bands and flags at the top level too
            out.update({key: self.best[0][key] for key in ("bands", "band_basis", "band_coverage", "extrapolation")
                        if key in self.best[0]})
            out["at_risk"] = self.constraints.at_risk(self.best[0])
        return out


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def _layer_splits(layers: int, max_pp: int) -> list[tuple[int, int, int, int]]:
    """(pp, first, middle, last) for every stage count with a balanced split."""
    splits = []
    for pp in range(1, min(layers, max_pp) + 1):
        split = balanced_layer_split(layers, pp)
        if split is not None:
            splits.append((pp, *split))
    return splits


def _tp_values(model: Model, chips: int, limit: int, domain: int = 1) -> list[int]:
    """TP degrees the estimator accepts (dividing the heads; dividing or a multiple of the KV
    heads), up to ``limit`` and ``chips``; with ``domain`` > 1, only divisors of it."""
    values = []
    for tp in _divisors(model.attention_heads, limit):
        if model.kv_heads % tp == 0 or tp % model.kv_heads == 0:
            values.append(tp)
    return [tp for tp in values if tp <= chips and (domain <= 1 or domain % tp == 0)]


def enumerate_plans(model: Model, chips: int, seq_len: int, global_batch: int,
                    space: SearchSpace, domain: int = 1) -> dict[str, IntArray]:
    """Every valid plan as columns (see module doc for the axes and the rules)."""
    return cross_settings(enumerate_layouts(model, chips, seq_len, global_batch, space, domain), space)


def enumerate_layouts(model: Model, chips: int, seq_len: int, global_batch: int,
                      space: SearchSpace, domain: int = 1) -> dict[str, IntArray]:
    """Every valid parallel layout (TP, CP, PP split, VP, DP, EP, micro-batch) as columns.

    ``domain`` > 1: the chips used are a whole number of units of that many chips and TP
    divides the unit (``search`` passes the system's allocation size, its scale-up domain or
    TPU cube, unless ``space.any_shape``); 1: any count and TP."""
    if not space.chips_at_most and domain > 1 and chips % domain != 0:
        return {}
    tps = np.array(_tp_values(model, chips, space.max_tp, domain), dtype=np.int64)
    # Ring attention (CP) runs on fused attention kernels: without them only cp = 1.
    max_cp = space.max_cp if space.settings.get("flash_attention", True) else 1
    cps = np.array([c for c in (1, 2, 4, 8, 16, 32, 64, 128) if c <= max_cp
                    and (c == 1 or seq_len % (2 * c) == 0)], dtype=np.int64)
    splits = np.array(_layer_splits(model.layers, space.max_pp), dtype=np.int64)
    # layouts: tp x cp x split
    t, c, s = (a.ravel() for a in np.meshgrid(tps, cps, np.arange(len(splits)), indexing="ij"))
    pp, first, middle, last = (splits[s, i] for i in range(4))
    inner = t * c * pp
    if space.chips_at_most:
        dps = np.array(_divisors(global_batch, chips), dtype=np.int64)
    else:
        dps = np.array(sorted({chips // int(x) for x in np.unique(inner) if chips % int(x) == 0}),
                       dtype=np.int64)
    if dps.size == 0 or inner.size == 0:
        return {}
    index, d = (a.ravel() for a in np.meshgrid(np.arange(inner.size), dps, indexing="ij"))
    t, c, pp, first, middle, last, inner = (a[index] for a in (t, c, pp, first, middle, last, inner))
    used = inner * d
    keep = (used == chips) if not space.chips_at_most else (used <= chips)
    keep &= global_batch % d == 0
    if domain > 1:
        keep &= used % domain == 0
    t, c, pp, first, middle, last, d = (a[keep] for a in (t, c, pp, first, middle, last, d))
    # virtual stages, experts, micro-batches: each axis is crossed in, innermost, and its rule
    # applied before the next, so the full product is never held (the order is that of one
    # layout x vp x ep x micro-batch product, masked).
    vps = np.arange(1, space.max_vp + 1, dtype=np.int64)
    eps = (np.array(_divisors(model.moe.experts, model.moe.experts), dtype=np.int64)
           if model.moe is not None else np.ones(1, dtype=np.int64))
    mbs = np.array(_divisors(global_batch, space.max_micro_batch), dtype=np.int64)
    # Interleaving: the same rule as `train` (balanced_layer_split with vp), looked up per (pp, vp).
    interleavable = np.zeros((int(pp.max(initial=1)) + 1, space.max_vp + 1), dtype=bool)
    for stages in np.unique(pp):
        for chunks in vps:
            interleavable[stages, chunks] = balanced_layer_split(model.layers, int(stages), int(chunks)) is not None
    columns = {"tp": t, "cp": c, "pp": pp, "layers_first": first, "layers_middle": middle,
               "layers_last": last, "dp": d}
    columns = _cross(columns, "vp", vps, lambda k: (k["vp"] == 1) | interleavable[k["pp"], k["vp"]])
    # MoE parallel folding: EP within tp*cp*dp (expert TP 1)
    columns = _cross(columns, "ep", eps, lambda k: (k["tp"] * k["cp"] * k["dp"]) % k["ep"] == 0)

    def micro_batch_rule(k: dict[str, IntArray]) -> NDArray[np.bool_]:
        per_replica = global_batch // k["dp"]
        micro_batches = per_replica // np.maximum(k["micro_batch"], 1)
        keep: NDArray[np.bool_] = per_replica % k["micro_batch"] == 0
        keep &= (k["vp"] == 1) | (micro_batches % k["pp"] == 0)
        return keep

    return _cross(columns, "micro_batch", mbs, micro_batch_rule)


def _cross(columns: dict[str, IntArray], name: str, values: IntArray,
           rule: Callable[[dict[str, IntArray]], NDArray[np.bool_]]) -> dict[str, IntArray]:
    """Every row of ``columns`` with every value of a new innermost column ``name``, keeping the
    rows that pass ``rule`` (row-major order, as one meshgrid with ``indexing="ij"`` would)."""
    rows = next(iter(columns.values())).size
    index, value = (a.ravel() for a in np.meshgrid(np.arange(rows), values, indexing="ij"))
    crossed = {k: a[index] for k, a in columns.items()}
    crossed[name] = value
    keep = rule(crossed)
    return {k: a[keep] for k, a in crossed.items()}


def settings_count(space: SearchSpace) -> int:
    return len(space.recompute) * len(space.zero) * len(space.precisions)


def cross_settings(columns: dict[str, IntArray], space: SearchSpace) -> dict[str, IntArray]:
    """Every layout with every recompute level, ZeRO stage and precision."""
    if not columns:
        return {}
    rec = np.array([RECOMPUTE_CODES[r] for r in space.recompute], dtype=np.int64)
    zer = np.array(space.zero, dtype=np.int64)
    pre = np.array([PRECISION_CODES[p] for p in space.precisions], dtype=np.int64)
    n = columns["tp"].size
    index, r, z, p = (a.ravel() for a in np.meshgrid(np.arange(n), rec, zer, pre, indexing="ij"))
    out = {k: a[index] for k, a in columns.items()}
    out.update({"recompute": r, "zero": z, "precision": p})
    return out


def _batch(model: Model, columns: dict[str, IntArray], seq_len: int, global_batch: int,
           space: SearchSpace) -> PlanBatch:
    fixed = space.settings
    gini = fixed.get("routing_gini")
    return PlanBatch.from_arrays(
        model, global_batch=global_batch, seq_len=seq_len, sp=1,
        overlap_tp=int(fixed.get("overlap_tp", True)), overlap_dp=int(fixed.get("overlap_dp", True)),
        overlap_pp=int(fixed.get("overlap_pp", True)), flash=int(fixed.get("flash_attention", True)),
        attention_kernel=ATTENTION_KERNEL_CODES[fixed.get("attention_kernel", "auto")],
        grad_reduce_bytes=4 if fixed.get("grad_reduce", Plan.model_fields["grad_reduce"].default) == "fp32" else 2,
        optimizer_bytes=optimizer_state_bytes(fixed.get("optimizer_moments",
                                                        Plan.model_fields["optimizer_moments"].default)),
        routing_gini=DEFAULT_ROUTING_GINI if gini is None else float(gini),
        capacity_factor=float(fixed.get("capacity_factor") or 0.0),
        overlap_ep=int(fixed.get("overlap_ep", False)),
        ep_dedup=int(fixed.get("ep_dedup", False)), mtp=int(fixed.get("mtp", 0)),
        recompute_modules=sum({RECOMPUTE_MODULE_BITS[m]
                               for m in fixed.get("recompute_modules", DEFAULT_RECOMPUTE_MODULES)}),
        # Quantized weights only exist in the fp8 and fp4 plans of the search.
        fp8_params=np.where(columns["precision"] >= PRECISION_CODES["fp8"], int(fixed.get("fp8_params", False)), 0),
        # Kept Q/K/V projections only change what full recompute re-runs.
        offload_qkv=np.where(columns["recompute"] == RECOMPUTE_CODES["full"], int(fixed.get("offload_qkv", False)), 0),
        # Full recompute keeps only each layer's input: nothing to offload (Plan refuses the two).
        offload_modules=np.where(columns["recompute"] == RECOMPUTE_CODES["full"], 0,
                                 sum({OFFLOAD_MODULE_BITS[m] for m in fixed.get("offload_modules", ())})),
        fused_cross_entropy=int(fixed.get("fused_cross_entropy", False)), loss_chunks=int(fixed.get("loss_chunks", 1)),
        **columns)


def _objective(step: NDArray[np.float64], chips: NDArray[np.float64], tdp: float,
               objective: str) -> NDArray[np.float64]:
    if objective == "time":
        return step
    if objective == "cost":
        return step * chips
    return step * chips * tdp


def _to_plan(columns: dict[str, IntArray], i: int, seq_len: int, global_batch: int,
             space: SearchSpace) -> Plan:
    codes = {v: k for k, v in RECOMPUTE_CODES.items()}
    precisions = {v: k for k, v in PRECISION_CODES.items()}
    tp, pp = int(columns["tp"][i]), int(columns["pp"][i])
    first, middle, last = (int(columns[k][i]) for k in ("layers_first", "layers_middle", "layers_last"))
    uneven = pp > 1 and not (first == middle == last)
    recompute = codes[int(columns["recompute"][i])]
    settings = dict(space.settings)
    if recompute != "selective":  # the modules only name what selective recompute re-runs
        settings.pop("recompute_modules", None)
    if int(columns["precision"][i]) != PRECISION_CODES["fp8"]:
        settings.pop("fp8_params", None)
    if recompute != "full":
        settings.pop("offload_qkv", None)
    else:
        settings.pop("offload_modules", None)
    return Plan(
        tp=tp, pp=pp, vp=int(columns["vp"][i]), cp=int(columns["cp"][i]), dp=int(columns["dp"][i]),
        ep=int(columns["ep"][i]), micro_batch=int(columns["micro_batch"][i]), global_batch=global_batch,
        seq_len=seq_len, recompute=recompute, sp=tp > 1,
        zero=int(columns["zero"][i]), precision=precisions[int(columns["precision"][i])],
        first_stage_layers=first if uneven else None, last_stage_layers=last if uneven else None,
        **settings)


def _why(record: dict[str, Any], best: dict[str, Any], objective: str) -> str:
    """Why this plan loses to the best: the component that grew most, as a share of its step,
    and how much worse the objective is."""
    if record is best:
        return "best"
    step, best_step = record["step_time_s"], best["step_time_s"]
    if objective != "time":  # cost and energy both scale with chip-time
        worse = 100.0 * (step * record["chips"] / (best_step * best["chips"]) - 1.0)
        if abs(worse) < 0.05:
            return "ties the best (chip-hours within 0.05 %; ranked by memory headroom)"
        if record["chips"] != best["chips"]:
            return f"{record['chips']:,} chips at {100 * record['mfu']:.1f} % MFU; {worse:+.1f} % chip-hours"
    growth = {k: record["time_breakdown_s"][k] - best["time_breakdown_s"].get(k, 0.0)
              for k in record["time_breakdown_s"]}
    key = max(growth, key=lambda k: growth[k])
    share = 100.0 * record["time_breakdown_s"][key] / step
    best_share = 100.0 * best["time_breakdown_s"].get(key, 0.0) / best_step
    slower = 100.0 * (step / best_step - 1.0)
    if abs(slower) < 0.05:
        return "ties the best (step time within 0.05 %; ranked by memory headroom)"
    return f"{COMPONENT_NAMES[key]} {share:.1f} % (best {best_share:.1f} %); {slower:+.1f} % step time"


def plan_label(plan: dict[str, Any]) -> str:
    """A plan record's layout in one short string (``TP8 PP16 VP8 CP8 DP256 mb1 none Z2 fp8``)."""
    parts = [f"TP{plan['tp']}", f"PP{plan['pp']}"]
    parts += [f"{name.upper()}{plan[name]}" for name in ("vp", "cp") if plan[name] > 1]
    parts += [f"DP{plan['dp']}"] + ([f"EP{plan['ep']}"] if plan.get("ep", 1) > 1 else [])
    parts += [f"mb{plan['micro_batch']}", plan["recompute"], f"Z{plan['zero']}", plan["precision"]]
    return " ".join(parts)


@dataclass(frozen=True)
class _RunCost:
    """Time and cost of training ``tokens`` for a batch of timed plans, vectorised, with the
    same formulas as :func:`clusterplan.training.summary.train_record`."""

    tokens: float
    usd_per_chip_hour_idle: float | None  # TCO per chip-hour at activity 0 (None: no price)
    usd_per_chip_hour_slope: float  # its growth to activity 1 (linear: the chips' power)

    @classmethod
    def of(cls, hardware: Hardware, tokens: float, need_price: bool) -> _RunCost:
        from clusterplan.catalog import load_economics
        from clusterplan.costs.money import cost_per_chip_hour

        economics = load_economics()
        try:
            idle = cost_per_chip_hour(hardware.system, hardware.chip, economics, 0.0)["total_usd"]
            busy = cost_per_chip_hour(hardware.system, hardware.chip, economics, 1.0)["total_usd"]
        except SpecError as missing:
            if need_price:
                raise SpecError("--budget", hardware.system.name,
                                f"the system has no price in catalog/economics.yaml ({missing.rule})") from None
            return cls(tokens, None, 0.0)
        return cls(tokens, float(idle), float(busy - idle))

    def time_to_train(self, tokens_per_s_per_chip: NDArray[np.float64],
                      chips: NDArray[np.float64]) -> NDArray[np.float64]:
        result: NDArray[np.float64] = self.tokens / (tokens_per_s_per_chip * chips)
        return result

    def cost(self, time_to_train: NDArray[np.float64], chips: NDArray[np.float64],
             compute_s: NDArray[np.float64], step: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.usd_per_chip_hour_idle is None:
            return np.full(step.shape, np.nan)
        share = compute_s / step
        activity = np.minimum(1.0, share + WAITING_ACTIVITY * (1.0 - share))
        hourly = self.usd_per_chip_hour_idle + self.usd_per_chip_hour_slope * activity
        result: NDArray[np.float64] = hourly * (time_to_train * chips / 3600.0)
        return result


class _Nearest:
    """The plans closest to the constraints, kept while streaming chunks (one row each)."""

    def __init__(self) -> None:
        self.best: dict[str, tuple[float, dict[str, IntArray]]] = {}

    def offer(self, name: str, values: NDArray[np.float64], mask: NDArray[np.bool_] | None,
              columns: dict[str, IntArray]) -> None:
        """Keep the row of ``columns`` with the least ``values`` (where ``mask``) if it beats the kept one."""
        masked = values if mask is None else np.where(mask, values, np.inf)
        if masked.size == 0:
            return
        i = int(np.argmin(masked))
        value = float(masked[i])
        if np.isfinite(value) and (name not in self.best or value < self.best[name][0]):
            self.best[name] = (value, {k: v[i:i + 1] for k, v in columns.items()})


def search(model: Model, hardware: Hardware, chips: int, seq_len: int, global_batch: int,
           space: SearchSpace | None = None, objective: Objective = "time",
           max_memory_fraction: float = 0.9, top: int = 10, tokens: float | None = None,
           prune: bool = True, max_step_time_s: float | None = None,
           constraints: Constraints | None = None, target: TrainTarget | None = None) -> SearchResult:
    """Best ``top`` plans for ``model`` on ``chips`` chips of ``hardware`` (see module doc).

    ``max_step_time_s`` makes a deadline: plans slower than it are not ranked (e.g. the fewest
    chip-hours that still train in 90 days). ``constraints`` do the same in a planner's terms
    (a deadline for ``tokens``, a budget in USD, a chip cap). ``target`` names the model and
    system in each plan's ``command`` (default: their catalog names)."""
    space = (space or SearchSpace()).validated()
    constraints = (constraints or Constraints()).validated(tokens)
    if objective not in ("time", "cost", "energy"):
        raise SpecError("--objective", objective, "must be time, cost or energy")
    if not 0.0 < max_memory_fraction <= 1.0:
        raise SpecError("--max-memory-fraction", max_memory_fraction, "must be in (0, 1]")
    for name, value in (("--chips", chips), ("--seq", seq_len), ("--global-batch", global_batch),
                        ("--top", top)):
        if value < 1:
            raise SpecError(name, value, "must be >= 1")
    if "selective" in space.recompute:  # the modules every selective plan shares
        check_recompute_modules(model, tuple(space.settings.get("recompute_modules", DEFAULT_RECOMPUTE_MODULES)),
                                bool(space.settings.get("overlap_ep", False)))
    offloaded = tuple(space.settings.get("offload_modules", ()))
    if offloaded:  # checked against the recompute of the plans that keep them (full-recompute plans drop them)
        kept_by = ("selective" if "selective" in space.recompute else
                   "none" if "none" in space.recompute else "full")
        check_offload_modules(model, offloaded, kept_by,
                              tuple(space.settings.get("recompute_modules", DEFAULT_RECOMPUTE_MODULES)))
    start = time.perf_counter()
    domain = 1 if space.any_shape else hardware.system.allocation_size
    budget = hardware.chip.hbm_bytes * max_memory_fraction
    limit = chips
    if constraints.max_chips is not None and space.chips_at_most:
        limit = min(chips, constraints.max_chips)
    layouts = enumerate_layouts(model, limit, seq_len, global_batch, space, domain)
    enumerated = int(layouts["tp"].size) * settings_count(space) if layouts else 0

    def result(fitting: int = 0, timed: int = 0, best: list[dict[str, Any]] | None = None, meeting: int = 0,
               unmet: str = "", nearest: dict[str, dict[str, Any]] | None = None) -> SearchResult:
        return SearchResult(enumerated, fitting, timed, time.perf_counter() - start, objective, best or [],
                            constraints, meeting, domain, unmet, nearest or {})

    if constraints.max_chips is not None and not space.chips_at_most and chips > constraints.max_chips:
        return result(unmet=f"the job uses exactly {chips:,} chips, more than the {constraints.max_chips:,} "
                            "allowed (max_chips)")
    if enumerated == 0:
        return result()
    if prune:
        layouts = _layouts_that_can_fit(model, hardware, layouts, seq_len, global_batch, space, budget)
    run_cost = (_RunCost.of(hardware, tokens, constraints.budget_usd is not None)
                if tokens is not None and constraints.active else None)
    nearest = _Nearest()
    # Stream layouts in chunks (each layout with all its settings stays in one chunk, so the
    # dominance pruning is unchanged), keeping only a running top list: memory stays bounded
    # however large the space.
    per_chunk = max(1, CHUNK // settings_count(space))
    fitting = timed_count = meeting = 0
    kept: dict[str, list[IntArray]] = {}
    kept_scores: list[NDArray[np.float64]] = []
    kept_memory: list[NDArray[np.float64]] = []
    for lo in range(0, layouts["tp"].size, per_chunk):
        columns = cross_settings({k: v[lo:lo + per_chunk] for k, v in layouts.items()}, space)
        breakdown = mem.memory_breakdown(model, _batch(model, columns, seq_len, global_batch, space),
                                         hardware.efficiency.reserved_bytes)
        memory = np.asarray(sum(breakdown.values()), dtype=np.float64)
        candidates = np.flatnonzero(memory <= budget)
        fitting += int(candidates.size)
        if prune and candidates.size:
            candidates = _least_recompute(columns, candidates, settings_count(space))
        timed_count += int(candidates.size)
        if not candidates.size:
            continue
        timed = {k: v[candidates] for k, v in columns.items()}
        batch = _batch(model, timed, seq_len, global_batch, space)
        estimated = estimate(model, hardware, batch)
        used = batch.chips.astype(np.float64)
        score = _objective(estimated.step_time, used, hardware.chip.tdp_w, objective)
        if max_step_time_s is not None:  # a deadline: slower plans are not eligible
            score = np.where(estimated.step_time <= max_step_time_s, score, np.inf)
        if run_cost is not None:
            ok = _meets(constraints, run_cost, estimated.step_time, estimated.tokens_per_s_per_chip,
                        estimated.time_breakdown["compute"], used, timed, nearest)
            score = np.where(ok, score, np.inf)
        elif constraints.max_chips is not None:
            score = np.where(used <= constraints.max_chips, score, np.inf)
        meeting += int(np.count_nonzero(np.isfinite(score)))
        # Ties (equal score) go to the plan with more memory headroom.
        local = np.lexsort((memory[candidates], np.round(score, 12)))[:top]
        for k, v in timed.items():
            kept.setdefault(k, []).append(v[local])
        kept_scores.append(score[local])
        kept_memory.append(memory[candidates][local])
    if not kept_scores:
        return result(fitting, timed_count)
    timed = {k: np.concatenate(v) for k, v in kept.items()}
    scores = np.concatenate(kept_scores)
    order = np.lexsort((np.concatenate(kept_memory), np.round(scores, 12)))[:top]
    order = order[np.isfinite(scores[order])]
    target = target or TrainTarget.of(model, hardware)

    def record_of(columns: dict[str, IntArray], i: int) -> dict[str, Any]:
        plan = _to_plan(columns, i, seq_len, global_batch, space)
        record = train_record(model, hardware, plan, tokens, max_memory_fraction)
        record["allocation_units"] = plan.chips / hardware.system.allocation_size
        record["command"] = train_command(target, plan, tokens)
        return record

    best = [record_of(timed, int(i)) for i in order]
    for record in best:
        record["why_not_best"] = _why(record, best[0], objective)
    if best or not constraints.active:
        return result(fitting, timed_count, best, meeting)
    closest = {name: record_of(columns, 0) for name, (_, columns) in nearest.best.items()}
    return result(fitting, timed_count, best, meeting, _unmet(constraints, closest, tokens), closest)


def _meets(constraints: Constraints, run_cost: _RunCost, step: NDArray[np.float64],
           tokens_per_s_per_chip: NDArray[np.float64], compute_s: NDArray[np.float64],
           chips: NDArray[np.float64], timed: dict[str, IntArray], nearest: _Nearest) -> NDArray[np.bool_]:
    """Which timed plans meet every constraint; offers the closest ones to ``nearest``."""
    time_to_train = run_cost.time_to_train(tokens_per_s_per_chip, chips)
    ok = np.ones(step.shape, dtype=bool)
    if constraints.max_chips is not None:
        ok &= chips <= constraints.max_chips
    on_time = within_budget = ok
    if constraints.deadline_s is not None:
        on_time = ok & (time_to_train <= constraints.deadline_s)
        nearest.offer("fastest", time_to_train, ok, timed)
    if constraints.budget_usd is not None:
        cost = run_cost.cost(time_to_train, chips, compute_s, step)
        within_budget = ok & (cost <= constraints.budget_usd)
        nearest.offer("cheapest", cost, ok, timed)
        if constraints.deadline_s is not None:
            nearest.offer("fastest_within_budget", time_to_train, within_budget, timed)
            nearest.offer("cheapest_on_time", cost, on_time, timed)
    result: NDArray[np.bool_] = on_time & within_budget
    return result


def _unmet(constraints: Constraints, closest: dict[str, dict[str, Any]], tokens: float | None) -> str:
    """Why no plan met the constraints, naming the plan that came closest."""

    def plan(record: dict[str, Any]) -> str:
        return f"{plan_label(record['plan'])} on {record['chips']:,} chips"

    days, usd = units.format_duration, _usd

    amount = format_tokens(tokens or 0.0)
    cap = f" on at most {constraints.max_chips:,} chips" if constraints.max_chips is not None else ""
    deadline, budget = constraints.deadline_s, constraints.budget_usd
    fastest, cheapest = closest.get("fastest"), closest.get("cheapest")
    if deadline is not None and fastest is not None and fastest["time_to_train_s"] > deadline:
        return (f"no plan trains {amount} tokens within {days(deadline)}{cap}: the fastest that fits, "
                f"{plan(fastest)}, takes {days(fastest['time_to_train_s'])}")
    if budget is not None and cheapest is not None and cheapest["cost_usd"] > budget:
        return (f"no plan trains {amount} tokens for {usd(budget)} or less{cap}: the cheapest that fits, "
                f"{plan(cheapest)}, costs {usd(cheapest['cost_usd'])} "
                f"({days(cheapest['time_to_train_s'])})")
    quick, cheap = closest.get("fastest_within_budget"), closest.get("cheapest_on_time")
    if deadline is not None and budget is not None:
        parts = []
        if quick is not None:
            parts.append(f"the fastest within {usd(budget)}, {plan(quick)}, takes {days(quick['time_to_train_s'])}")
        if cheap is not None:
            parts.append(f"the cheapest within {days(deadline)}, {plan(cheap)}, costs {usd(cheap['cost_usd'])}")
        return (f"no plan trains {amount} tokens within both {days(deadline)} and {usd(budget)}{cap}"
                + (": " + "; ".join(parts) if parts else ""))
    return f"no plan that fits in memory meets the constraints{cap}"


def _layouts_that_can_fit(model: Model, hardware: Hardware, layouts: dict[str, IntArray], seq_len: int,
                          global_batch: int, space: SearchSpace, budget: float) -> dict[str, IntArray]:
    """Drop layouts that cannot fit with any setting: memory only falls with more recompute and
    a higher ZeRO stage, so the layout with the most recompute and the highest ZeRO stage is a
    lower bound for each precision. Precision is not monotone (fp8 adds a weight copy but keeps
    fp8 activations), so a layout stays if it fits at any of the searched precisions."""
    keep = np.zeros(layouts["tp"].size, dtype=bool)
    for precision in space.precisions:
        leanest = dataclasses.replace(
            space, recompute=(max(space.recompute, key=lambda r: RECOMPUTE_CODES[r]),),
            zero=(max(space.zero),), precisions=(precision,))
        for lo in range(0, keep.size, CHUNK):
            part = cross_settings({k: v[lo:lo + CHUNK] for k, v in layouts.items()}, leanest)
            breakdown = mem.memory_breakdown(model, _batch(model, part, seq_len, global_batch, leanest),
                                             hardware.efficiency.reserved_bytes)
            keep[lo:lo + CHUNK] |= sum(breakdown.values()) <= budget
    return {k: v[keep] for k, v in layouts.items()}


def _least_recompute(columns: dict[str, IntArray], candidates: IntArray, settings: int) -> IntArray:
    """Among fitting candidates equal in everything but recompute, keep the least recompute.

    ``columns`` come from :func:`cross_settings`: each layout's ``settings`` rows are consecutive,
    so candidates equal in everything but recompute share (layout, ZeRO stage, precision). Ties
    (a level listed twice) keep the first candidate."""
    layout = candidates // settings
    group = (layout * 4 + columns["zero"][candidates]) * 4 + columns["precision"][candidates]
    order = np.argsort(group * 4 + columns["recompute"][candidates], kind="stable")
    grouped = group[order]
    first_of_group = np.ones(order.size, dtype=bool)
    first_of_group[1:] = grouped[1:] != grouped[:-1]
    result: IntArray = candidates[order[first_of_group]]
    return np.sort(result)
