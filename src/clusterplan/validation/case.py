"""One validation case (a published row as a model, system, plan and metric) and the builder the
table adapters share; the registry of tables is ``validation/registry.py``."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

from pydantic import ValidationError

from clusterplan.catalog import load_chip
from clusterplan.costs.compute import Efficiency
from clusterplan.errors import SpecError
from clusterplan.specs import Chip, Model, Plan, System

#: What a case compares: step time (s), training tokens/s per chip, or model TFLOP/s per chip.
METRICS = ("step_time_s", "tokens_per_s_per_chip", "model_tflops_per_chip")


def higher_is_faster(metric: str) -> bool:
    """Whether a larger value of ``metric`` means a faster run (rates: per second, or TFLOP/s)
    or a slower one (times, whose names end in ``_s``: ``step_time_s``, ``ttft_s``)."""
    return "_per_s" in metric or not metric.endswith("_s")


@dataclass(frozen=True)
class Case:
    table: str
    label: str
    metric: str
    published: float
    model: Model | None = None
    system: System | None = None
    plan: Plan | None = None
    assumptions: tuple[str, ...] = ()
    skip: str | None = None
    source: str = ""
    family: str = ""
    chip: Chip | None = None  # overrides the system's catalog chip (e.g. one NeuronCore)
    devices_per_chip: int = 1  # plan devices per physical chip (NeuronCores per Trainium1)
    # Non-training rows (serving) predict their metric from the family's efficiencies.
    predict: Callable[[Efficiency], float] | None = None
    # Plan fields the row does not print, taken from its recipe: a user who types the printed
    # plan gets the CLI's defaults for them (the memory test at defaults, harness.Result).
    recipe_fields: tuple[str, ...] = ()


#: How a row's assumptions name its fused-attention library (Plan.attention_kernel).
ATTENTION_TEXT = {"auto": "the chip family's reference library", "flash1": "FlashAttention 1.x",
                  "flash2": "FlashAttention-2", "cudnn": "cuDNN fused attention via Transformer Engine",
                  "flash3": "FlashAttention-3"}


@dataclass
class _Builder:
    table: str
    cases: list[Case] = field(default_factory=list)

    def add(self, label: str, metric: str, published: float, build: Callable[[], tuple[Model, System, Plan]],
            assumptions: tuple[str, ...] = (), source: str = "", chip: Chip | None = None,
            devices_per_chip: int = 1, recipe_fields: tuple[str, ...] = ()) -> None:
        try:
            model, system, plan = build()
            plan.validate_for(model, plan.chips)
        except (SpecError, ValidationError, KeyError, ValueError) as error:
            reason = str(error).splitlines()[0]
            self.cases.append(Case(self.table, label, metric, published, skip=reason, source=source,
                                   assumptions=assumptions))
            return
        family = chip.family if chip is not None else load_chip(system.chip).family
        unknown = [name for name in recipe_fields if name not in Plan.model_fields]
        if unknown:
            raise ValueError(f"recipe_fields {unknown} are not Plan fields")
        self.cases.append(Case(self.table, label, metric, published, model, system, plan,
                               assumptions, source=source, family=family, chip=chip,
                               devices_per_chip=devices_per_chip, recipe_fields=recipe_fields))

    def skip(self, label: str, metric: str, published: float, reason: str, source: str = "") -> None:
        self.cases.append(Case(self.table, label, metric, published, skip=reason, source=source))


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("clusterplan.validation").joinpath(f"tables/{name}.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


