"""How long does one training step take, and does the plan fit? (``clusterplan train``)"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from clusterplan.api._base import Answer, PlanOptions, Request, tokens_field
from clusterplan.api._edge import build_plan, flag
from clusterplan.catalog import hardware_for, load_chip, load_model, load_system
from clusterplan.errors import SpecError


class TrainRequest(Request):
    """One plan of one model on one system: the Plan fields given in ``plan`` (``seq_len`` and
    ``global_batch`` required), the rest at their defaults, ``dp`` from the chips."""

    model: str = Field(description="catalog model name (or a model YAML path, CLI only)")
    system: str = Field(description="catalog system name (or a system YAML path, CLI only)")
    chips: int = Field(description="chips in the job")
    plan: PlanOptions = PlanOptions()
    tokens: float | None = Field(None, description="training tokens (15T), for the time to train")
    chip: str | None = Field(None, description="override the system's chip")
    #: Where each plan field came from when not an option (a ``--plan`` file's ``name:field``),
    #: so a refusal names it.
    origins: dict[str, str] = Field(default_factory=dict)

    @field_validator("tokens", mode="before")
    @classmethod
    def tokens_given(cls, value: Any) -> float | None:
        return tokens_field(value)


class TrainAnswer(Answer):
    """One step's time, memory and cost (``record``: the ``train --json`` object)."""

    model: str
    system: str
    chip: str
    chips: int
    step_time_s: float
    mfu: float
    memory_bytes_per_chip: float
    fits_memory: bool
    time_to_train_s: float | None = None
    cost_usd: float | None = None


def answer(request: TrainRequest) -> TrainAnswer:
    """Estimate the step; the settings left open are listed with what changing each would do
    (``assumed``); ``layer_split`` when pp > 1. With recompute left open and the default not
    fitting, the fastest recompute that fits is taken and stated (``recompute_chosen``). A plan
    that does not fit is answered (its figures, ``fits_memory`` false): the CLI then ends with
    exit code 1."""
    from clusterplan.training.recompute import recompute_for
    from clusterplan.training.sensitivity import assumed_settings, layer_split_record
    from clusterplan.training.summary import train_record

    options, origins = request.plan.given(), request.origins
    spec_model = load_model(request.model, "--model")
    spec_system = load_system(request.system, "--system")
    spec_chip = load_chip(request.chip, "--chip") if request.chip else None
    plan = build_plan(options, request.chips, spec_model, origins)
    try:
        plan.validate_placement(spec_system.scale_up_size)
    except SpecError as error:
        raise error.renamed(origins.get(error.field, flag(error.field))) from None
    hardware = hardware_for(spec_system, spec_chip)
    hardware.chip.require(plan.precision, origins.get("precision", "--precision"))
    plan, choice = recompute_for(spec_model, hardware, plan, options)
    record = train_record(spec_model, hardware, plan, request.tokens)
    if choice is not None:
        record["recompute_chosen"] = choice.record()
    split_given = any(options.get(field) is not None for field in ("first_stage_layers", "last_stage_layers"))
    if plan.pp > 1:
        record["layer_split"] = layer_split_record(spec_model, plan, given=split_given)
    record["assumed"] = assumed_settings(spec_model, hardware, plan, set(options), record["step_time_s"])
    return train_answer(record)


def train_answer(record: dict[str, Any]) -> TrainAnswer:
    """A train record (``training/summary.py``) as a typed answer."""
    return TrainAnswer(
        record=record, model=record["model"], system=record["system"], chip=record["chip"], chips=record["chips"],
        step_time_s=record["step_time_s"], mfu=record["mfu"], memory_bytes_per_chip=record["memory_bytes_per_chip"],
        fits_memory=record["fits_memory"], time_to_train_s=record.get("time_to_train_s"),
        cost_usd=record.get("cost_usd"))
