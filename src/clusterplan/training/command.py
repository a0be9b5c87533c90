"""The ``clusterplan train`` invocation that reproduces a plan's estimate.

A searched plan is only useful if it can be run again exactly as printed: an uneven pipeline
split, the ZeRO stage, the precision or a framework setting left out of a printed layout
changes the step (or is refused: ``layers=126 must be divisible by pp*vp=128``). This module
spells a :class:`~clusterplan.specs.Plan` as the options of ``clusterplan train`` — every field
that differs from what ``train`` would assume, and the layout always — so that running the
command gives the same Plan, hence the same step time.

Option names follow the CLI's rule (``--`` + the field with ``-`` for ``_``; ``seq_len`` is
``--seq``); ``tests/test_search_constraints.py`` checks the spelling against the CLI itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from clusterplan.specs import Model, Plan
from clusterplan.training.step import Hardware

#: Plan fields whose option is not ``--`` + the field name with dashes.
PLAN_FLAGS = {"seq_len": "--seq"}
#: Fields always written (the layout and the settings a reader looks for), defaults or not.
ALWAYS = ("seq_len", "global_batch", "tp", "pp", "vp", "cp", "dp", "micro_batch", "recompute", "zero",
          "precision")
#: The order options are written in: batch, layout (stage layers next to PP), settings; then
#: every other field in the Plan's order.
FIRST = ("seq_len", "global_batch", "tp", "pp", "vp", "first_stage_layers", "last_stage_layers", "cp", "dp",
         "ep", "etp", "micro_batch", "recompute", "zero", "precision")
#: Boolean fields whose CLI switch has no ``--no-`` form (written only when on).
ON_ONLY = ("ep_within_scale_up",)


@dataclass(frozen=True)
class TrainTarget:
    """How ``clusterplan train`` names what a plan runs on: the model and system (catalog names
    or YAML paths, as the user gave them) and a chip override (None: the system's own chip)."""

    model: str
    system: str
    chip: str | None = None

    @classmethod
    def of(cls, model: Model, hardware: Hardware) -> TrainTarget:
        """Catalog names of ``model`` and ``hardware``; the chip only when it is not the system's."""
        chip = hardware.chip.name if hardware.chip.name != hardware.system.chip else None
        return cls(model=model.name, system=hardware.system.name, chip=chip)


def plan_flag(field: str) -> str:
    """The ``clusterplan train`` option of Plan ``field``."""
    return PLAN_FLAGS.get(field, "--" + field.replace("_", "-"))


def _value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def field_options(name: str, value: Any) -> list[str]:
    """Plan field ``name`` at ``value`` as ``train`` options: ``--flag`` / ``--no-flag`` for a
    switch (nothing for an off switch without a ``--no-`` form), else ``--flag value``."""
    if isinstance(value, bool):
        if not value and name in ON_ONLY:
            return []
        return [plan_flag(name) if value else "--no-" + plan_flag(name)[2:]]
    return [plan_flag(name), _value(value)]


def plan_options(plan: Plan) -> list[str]:
    """``plan`` as ``train`` options: the layout always, every other field that differs from
    the value ``train`` would assume (the Plan default; SP on when TP > 1)."""
    defaults = {name: field.default for name, field in Plan.model_fields.items()}
    defaults["sp"] = plan.tp > 1
    argv: list[str] = []
    for name in [*FIRST, *(f for f in Plan.model_fields if f not in FIRST)]:
        value = getattr(plan, name)
        if name not in ALWAYS and (value is None or value == defaults[name]):
            continue
        argv += field_options(name, value)
    return argv


def format_tokens(tokens: float) -> str:
    """Tokens with the largest decimal prefix that still parses back exactly (``15T``)."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        text = f"{tokens / scale:.15g}"
        if abs(tokens) >= scale and float(text) * scale == tokens:
            return text + prefix
    return repr(float(tokens))


def train_argv(target: TrainTarget, plan: Plan, tokens: float | None = None) -> list[str]:
    """The arguments of ``clusterplan train`` (without the program name) that rerun ``plan``."""
    argv = ["train", "--model", target.model, "--system", target.system, "--chips", str(plan.chips)]
    if target.chip is not None:
        argv += ["--chip", target.chip]
    argv += plan_options(plan)
    if tokens is not None:
        argv += ["--tokens", format_tokens(tokens)]
    return argv


def train_command(target: TrainTarget, plan: Plan, tokens: float | None = None) -> str:
    """The shell command (quoted where needed) that reruns ``plan`` with ``clusterplan train``."""
    return shlex.join(["clusterplan", *train_argv(target, plan, tokens)])


def wrap_command(command: str, width: int = 80, indent: str = "    ") -> list[str]:
    """``command`` folded into shell lines of at most ``width`` characters, ending in `` \\``,
    each option kept on one line with its value (a long path may still overflow)."""
    words = shlex.split(command)
    groups: list[str] = []
    for word in words:
        if groups and not word.startswith("--") and groups[-1].startswith("--") and " " not in groups[-1]:
            groups[-1] += " " + shlex.quote(word)
        else:
            groups.append(shlex.quote(word))
    lines: list[str] = []
    current = ""
    for group in groups:
        prefix = indent if lines or current else ""
        candidate = f"{current} {group}" if current else prefix + group
        if current and len(candidate) + 2 > width:
            lines.append(current + " \\")
            current = indent + group
        else:
            current = candidate
    lines.append(current)
    return lines
