"""The activation recompute a plan needs to fit, when its user left recompute open.

A published training run ran, so its configuration fitted: the recipe behind it chose how much
of the forward pass to recompute (Megatron-Core ``--recompute-granularity`` and
``--recompute-modules``, MaxText ``remat_policy``) so that the activations fit beside the
weights and optimizer state. Publications print the parallel layout and batch, rarely that
choice. A planner asked for such a plan with recompute left open should answer for the plan as
it would run, not refuse it: the same choice a recipe author makes.

So when the default (selective recompute of the attention core, Megatron's default) does not
fit, every escalation is built (selective recompute of the attention core plus any combination
of the other modules the model has, then full recompute), all are estimated in one batch, and the
fastest that fits is taken. Only escalations are considered: a plan whose default fits keeps it,
so nothing that fitted changes. What was chosen, and why, is returned for the output to say.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from itertools import combinations

from pydantic import ValidationError

from clusterplan.errors import SpecError
from clusterplan.specs import Model, Plan
from clusterplan.specs.plan import DEFAULT_RECOMPUTE_MODULES, check_recompute_modules
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import Hardware, estimate

#: Plan fields that, given by the user, fix the recompute: nothing is chosen for them.
RECOMPUTE_FIELDS = ("recompute", "recompute_modules", "offload_qkv")
#: Selective-recompute modules added to the default's to escalate, cheapest kinds first (the
#: order only fixes ties in step time).
EXTRA_MODULES = ("layernorm", "moe_act", "elementwise", "shared_experts", "mla_up_proj", "mlp", "moe")


@dataclass(frozen=True)
class RecomputeChoice:
    """The recompute chosen for a plan whose default did not fit."""

    plan: Plan
    default_memory_bytes: float
    memory_bytes: float
    capacity_bytes: float

    def record(self) -> dict[str, object]:
        """The ``recompute_chosen`` object of ``train --json``."""
        return {"recompute": self.plan.recompute,
                "recompute_modules": list(self.plan.recompute_modules) if self.plan.recompute == "selective" else [],
                "chosen": "automatically",
                "default_memory_bytes_per_chip": self.default_memory_bytes,
                "memory_bytes_per_chip": self.memory_bytes,
                "memory_capacity_bytes": self.capacity_bytes}


def escalations(model: Model, plan: Plan) -> list[Plan]:
    """Every recompute setting beyond the default for ``plan`` that ``model`` admits: selective
    with the default modules plus each combination of the extra ones, and full."""
    extras = [m for m in EXTRA_MODULES if _admits(model, plan, (*DEFAULT_RECOMPUTE_MODULES, m))]
    candidates: list[Plan] = []
    base = plan.model_dump()
    for size in range(1, len(extras) + 1):
        for combo in combinations(extras, size):
            modules = (*DEFAULT_RECOMPUTE_MODULES, *combo)
            if _admits(model, plan, modules):
                candidates.append(Plan.model_validate({**base, "recompute": "selective",
                                                       "recompute_modules": modules}))
    candidates.append(Plan.model_validate({**base, "recompute": "full",
                                           "recompute_modules": DEFAULT_RECOMPUTE_MODULES}))
    return candidates


def _admits(model: Model, plan: Plan, modules: tuple[str, ...]) -> bool:
    try:
        check_recompute_modules(model, modules, plan.overlap_ep)
    except SpecError:
        return False
    return True


def least_recompute_that_fits(model: Model, hardware: Hardware, plan: Plan) -> RecomputeChoice | None:
    """The fastest escalation of ``plan``'s recompute that fits the chip's HBM, or None when the
    plan fits as it is, or when nothing fits (the caller then reports the plan as given).
    ``plan`` must carry the default recompute."""
    capacity = float(hardware.chip.hbm_bytes)
    current = estimate(model, hardware, PlanBatch.from_plans([plan], model))
    default_memory = float(current.memory[0])
    if default_memory <= capacity:
        return None
    candidates = []
    for candidate in escalations(model, plan):
        try:
            candidates.append(candidate.validate_for(model, plan.chips))
        except (SpecError, ValidationError):
            continue
    if not candidates:
        return None
    result = estimate(model, hardware, PlanBatch.from_plans(candidates, model))
    fitting = [i for i in range(len(candidates)) if float(result.memory[i]) <= capacity]
    if not fitting:
        return None
    best = min(fitting, key=lambda i: (float(result.step_time[i]), i))
    return RecomputeChoice(candidates[best], default_memory, float(result.memory[best]), capacity)


def recompute_for(model: Model, hardware: Hardware, plan: Plan,
                  given: Collection[str]) -> tuple[Plan, RecomputeChoice | None]:
    """``plan`` with the recompute chosen for it when its user gave none of
    :data:`RECOMPUTE_FIELDS` (``given``: the Plan fields set), and the choice (None: kept)."""
    if any(field in given for field in RECOMPUTE_FIELDS):
        return plan, None
    choice = least_recompute_that_fits(model, hardware, plan)
    return (plan, None) if choice is None else (choice.plan, choice)
