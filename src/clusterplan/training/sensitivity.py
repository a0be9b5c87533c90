"""Sensitivity of one plan to the settings its user left open.

Every setting a user did not give (virtual stages, micro-batch, recompute, flash attention,
overlaps, ZeRO, gradient-reduction dtype, sequence parallelism, the pipeline layer split; for
an expert-parallel MoE plan the routing skew, the EP overlap and the dispatcher) took a
default. For each, one or two sensible alternatives are built as plans, the invalid ones (those
that do not validate for the model) dropped, and all the rest timed by the estimator in one
batch: the record says which assumption matters most.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

from clusterplan.errors import SpecError
from clusterplan.specs import Model, Plan
from clusterplan.training.batch import DEFAULT_ROUTING_GINI, REAL_TEXT_ROUTING_GINI, PlanBatch
from clusterplan.training.recompute import RECOMPUTE_FIELDS, recompute_for
from clusterplan.training.step import Hardware, estimate

#: The settings whose defaults are reported, in the order ties are listed.
SETTINGS = ("vp", "micro_batch", "recompute", "flash_attention", "attention_kernel", "overlap_tp", "overlap_pp",
            "overlap_dp", "sp", "zero", "grad_reduce", "layer_split", "routing_gini", "overlap_ep", "ep_dedup")
#: Given one of these, the layer split is the user's (not chosen automatically).
SPLIT_FIELDS = ("first_stage_layers", "last_stage_layers")


def split_text(first: int, middle: int, last: int, pp: int) -> str:
    """A layer split as ``7+14x8+7`` (first + middle stages x layers + last)."""
    if pp <= 1:
        return str(first)
    if pp == 2:
        return f"{first}+{last}"
    return f"{first}+{pp - 2}x{middle}+{last}"


def layer_split_record(model: Model, plan: Plan, given: bool) -> dict[str, Any]:
    """Layers per pipeline rank and who chose them: ``given`` (first/last stage layers set by
    the user), ``automatically`` (the balanced split: pp*vp does not divide the layers) or
    ``even``."""
    first, middle, last = plan.stage_layers(model)
    chosen = "given" if given else ("even" if first == middle == last else "automatically")
    return {"first_stage_layers": first, "middle_stage_layers": middle, "last_stage_layers": last,
            "stages": plan.pp, "split": split_text(first, middle, last, plan.pp), "chosen": chosen}


def _alternatives(plan: Plan, model: Model, hardware: Hardware) -> list[tuple[str, Any, Any, dict[str, Any]]]:
    """(setting, value, alternative, Plan fields to change) for every setting in SETTINGS."""
    out: list[tuple[str, Any, Any, dict[str, Any]]] = []

    def add(setting: str, value: Any, alternative: Any, **update: Any) -> None:
        out.append((setting, value, alternative, update or {setting: alternative}))

    if plan.pp > 1:
        for vp in (plan.vp * 2, plan.vp // 2):
            if vp >= 1 and vp != plan.vp:
                add("vp", plan.vp, vp)
    for micro_batch in (plan.micro_batch * 2, plan.micro_batch // 2):
        if micro_batch >= 1:
            add("micro_batch", plan.micro_batch, micro_batch)
    for level in ("none", "selective", "full"):
        if level != plan.recompute:
            update: dict[str, Any] = {"recompute": level}
            if level != "selective":
                update["recompute_modules"] = Plan.model_fields["recompute_modules"].default
            add("recompute", plan.recompute, level, **update)
    add("flash_attention", plan.flash_attention, not plan.flash_attention)
    # The FlashAttention-2 path of PyTorch-native stacks against the family's reference; where
    # FlashAttention-2 is the reference (Ampere), the FlashAttention-1 stacks that preceded it.
    other = "flash2" if hardware.attention_reference != "flash2" else "flash1"
    if plan.flash_attention and hardware.attention_kernel_measured(other):
        add("attention_kernel", plan.attention_kernel, other if plan.attention_kernel != other else "auto")
    if plan.tp > 1:
        add("overlap_tp", plan.overlap_tp, not plan.overlap_tp)
        add("sp", plan.sp, not plan.sp)
    if plan.pp > 1:
        add("overlap_pp", plan.overlap_pp, not plan.overlap_pp)
    if plan.dp * plan.cp > 1:
        add("overlap_dp", plan.overlap_dp, not plan.overlap_dp)
        add("grad_reduce", plan.grad_reduce, "bf16" if plan.grad_reduce == "fp32" else "fp32")
    for zero in (plan.zero + 1, plan.zero - 1):
        if 0 <= zero <= 3:
            add("zero", plan.zero, zero)
    if model.moe is not None and plan.ep > 1:
        # Balanced routing (the default, as published runs) against real-text skew, and back.
        gini = DEFAULT_ROUTING_GINI if plan.routing_gini is None else plan.routing_gini
        add("routing_gini", gini, REAL_TEXT_ROUTING_GINI if gini == 0 else 0.0)
        add("overlap_ep", plan.overlap_ep, not plan.overlap_ep)
        add("ep_dedup", plan.ep_dedup, not plan.ep_dedup)
    if plan.pp > 1:
        first, middle, last = plan.stage_layers(model)
        for shift in (1, -1):
            if first + shift >= 1 and last - shift >= 1:
                add("layer_split", split_text(first, middle, last, plan.pp),
                    split_text(first + shift, middle, last - shift, plan.pp),
                    first_stage_layers=first + shift, last_stage_layers=last - shift)
    return out


def assumed_settings(model: Model, hardware: Hardware, plan: Plan, given: Collection[str],
                     step_time_s: float) -> list[dict[str, Any]]:
    """For each setting in SETTINGS not in ``given`` (the Plan fields the user set), its value,
    an alternative and the step time (and memory) with it, most influential first. Alternatives
    that do not validate for the model are left out; all others are timed in one batch, each
    with the recompute `train` would choose for it when the recompute is open too."""
    split_given = any(field in given for field in SPLIT_FIELDS)
    open_settings = {s for s in SETTINGS if s not in given and not (s == "layer_split" and split_given)}
    # With recompute open, `train` chooses it for each plan (training/recompute.py): every other
    # alternative starts from the default recompute and gets the choice its own memory needs.
    recompute_open = not any(field in given for field in RECOMPUTE_FIELDS)
    default_recompute = {name: Plan.model_fields[name].default for name in ("recompute", "recompute_modules")}
    base = plan.model_dump()
    rows: list[tuple[str, Any, Any]] = []
    plans: list[Plan] = []
    for setting, value, alternative, update in _alternatives(plan, model, hardware):
        if setting not in open_settings:
            continue
        data = {**base, **update}
        if not split_given and setting != "layer_split":  # the split is redone for the new plan
            data.update(first_stage_layers=None, last_stage_layers=None)
        chosen = recompute_open and setting != "recompute"
        if chosen:
            data.update(default_recompute)
        try:
            candidate = Plan.model_validate(data).with_balanced_split(model)
            candidate.validate_for(model, plan.chips).validate_placement(hardware.system.scale_up_size)
        except (SpecError, ValidationError):
            continue
        if chosen:
            candidate, _ = recompute_for(model, hardware, candidate, given)
        rows.append((setting, value, alternative))
        plans.append(candidate)
    if not plans:
        return []
    result = estimate(model, hardware, PlanBatch.from_plans(plans, model))
    records = []
    for index, (setting, value, alternative) in enumerate(rows):
        step = float(result.step_time[index])
        memory = float(result.memory[index])
        records.append({"field": setting, "value": value, "alternative": alternative,
                        "step_time_s_if_changed": step, "step_change": step / step_time_s - 1.0,
                        "memory_bytes_per_chip_if_changed": memory,
                        "fits_memory_if_changed": bool(memory <= hardware.chip.hbm_bytes)})
    order = {setting: rank for rank, setting in enumerate(SETTINGS)}
    records.sort(key=lambda r: (-abs(r["step_change"]), order[r["field"]]))
    return records
