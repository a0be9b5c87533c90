"""Web input -> typed API requests: flat query parameters or a JSON object with the ``--json``
field names, catalog names only (the web takes no file-system paths)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from clusterplan.api import campus, capacity, fleet, rainier, reliability, search, serve, train
from clusterplan.api._base import Answer, PlanOptions
from clusterplan.errors import SpecError

#: Query-parameter spellings the CLI uses for a request field (``seq`` for ``seq_len``).
ALIASES = {"seq": "seq_len", "global-batch": "global_batch", "rate": "rate_per_s",
           "demand": "demand_output_tokens_per_s",
           "slo_ttft": "slo_ttft_s", "slo_tpot": "slo_tpot_s", "duration": "duration_s",
           "checkpoint_interval": "checkpoint_interval_s"}
#: Fields that name catalog entries or built-in scenarios (never a path from the web).
NAMES = ("model", "system", "chip", "scenario")
#: Request fields the web does not take: paths and the CLI's bookkeeping of a --plan file.
CLI_ONLY = ("trace", "origins", "deployment_file")


class Question:
    """One planning question the web answers: its request type and its ``answer``."""

    def __init__(self, request: type[BaseModel], answer: Callable[..., Answer], summary: str) -> None:
        self.request = request
        self.answer = answer
        self.summary = summary


QUESTIONS: dict[str, Question] = {
    "train": Question(train.TrainRequest, train.answer, "one plan's step time, memory and cost (train --json)"),
    "search": Question(search.SearchRequest, search.answer, "every plan, ranked (search --json)"),
    "serve": Question(serve.ServeRequest, serve.answer, "one serving replica (serve --json)"),
    "capacity": Question(capacity.CapacityRequest, capacity.answer,
                         "serving deployments for a demand at an SLO (capacity --json)"),
    "reliability": Question(reliability.ReliabilityRequest, reliability.answer,
                            "failures, checkpoints and goodput (reliability --json)"),
    "fleet": Question(fleet.FleetRequest, fleet.answer, "a fleet scenario per quarter (fleet --json)"),
    "rainier": Question(rainier.RainierRequest, rainier.answer, "the Project Rainier report (rainier --json)"),
    "campus": Question(campus.CampusRequest, campus.answer,
                       "the campus hour by hour under each allocation policy (campus --json)"),
}


def _catalog_name(field: str, value: Any) -> Any:
    """``value`` if it can only be a catalog name: paths are refused."""
    if isinstance(value, str) and ("/" in value or "\\" in value or value.lower().endswith((".yaml", ".yml"))
                                   or value.startswith(".")):
        raise SpecError(f"--{field}", value, "the web planner takes catalog names, not file paths")
    return value


def build_request(kind: str, data: Mapping[str, Any]) -> BaseModel:
    """The request of question ``kind`` from flat web input: request fields by name (or their
    CLI spelling: ``seq``, ``demand``, ``slo_ttft``), Plan fields at the top level or under
    ``plan``; an empty value is left out. Unknown fields are refused in one line."""
    question = QUESTIONS[kind]
    fields = question.request.model_fields
    values: dict[str, Any] = {}
    plan: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key not in fields:  # the CLI's spelling of a field (rainier's own ``demand`` stays)
            key = ALIASES.get(key, key)
        if value is None or value == "":
            continue
        if key == "plan" and "plan" in fields and isinstance(value, Mapping):
            plan.update(value)
        elif key in fields and key not in CLI_ONLY and key != "plan":
            values[key] = _catalog_name(key, value) if key in NAMES else value
        elif "plan" in fields and key in PlanOptions.model_fields:
            plan[key] = value
        else:
            known = sorted([name for name in fields if name not in CLI_ONLY and name != "plan"]
                           + (list(PlanOptions.model_fields) if "plan" in fields else []))
            raise SpecError(raw_key, value, f"unknown field of {kind} (known: {', '.join(known)})")
    if plan:
        values["plan"] = plan
    try:
        return question.request(**values)
    except ValidationError as error:
        first = error.errors()[0]
        location = [str(part) for part in first["loc"] if part != "plan"]
        field = "--" + (location[-1] if location else kind).replace("_", "-")
        raise SpecError(field, first.get("input"), str(first["msg"])) from None


def ask(kind: str, data: Mapping[str, Any]) -> Answer:
    """Answer question ``kind`` for web input ``data`` (SpecError on bad input)."""
    return QUESTIONS[kind].answer(build_request(kind, data))


def refusal(error: SpecError) -> dict[str, Any]:
    """The JSON body of a refusal: the field, the value, the rule and the one-line message."""
    value = error.value
    if not isinstance(value, str | int | float | bool | type(None)):
        value = str(value)
    return {"field": error.field, "value": value, "rule": error.rule, "message": str(error)}
