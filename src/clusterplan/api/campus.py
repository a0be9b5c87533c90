"""The campus hour by hour under each allocation policy (``clusterplan campus``; docs/campus.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator

from clusterplan.api._base import Answer, Request


class CampusRequest(Request):
    """A campus scenario (built-in name, or from the CLI a YAML path) over ``days`` under
    ``policy`` (one of shared, dedicated, slo-aware, or all)."""

    scenario: str = "rainier"
    days: int = Field(7, description="days simulated hour by hour (1 to 3660)")
    policy: str = Field("all", description="shared, dedicated, slo-aware or all")

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> Any:
        from clusterplan.campus.scenario import check_days

        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        return check_days(value)

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        from clusterplan.campus.scenario import check_policy

        check_policy(value)
        return value


class CampusAnswer(Answer):
    """Hourly, daily and whole-run figures of every policy (``record``: the ``campus --json``
    object, without ``report``); ``result`` the typed result the reports draw from."""

    scenario: str
    days: int
    policies: tuple[str, ...]
    training_tokens_per_day: dict[str, float]
    result: Any = Field(exclude=True, repr=False)


def answer(request: CampusRequest, progress: Callable[[str], None] | None = None) -> CampusAnswer:
    """Simulate the campus (the deployment and plan searches once, then every hour vectorised)."""
    from clusterplan.campus.run import campus_result

    result = campus_result(request.scenario, request.days, request.policy, progress=progress)
    record = result.record()
    return CampusAnswer(record=record, scenario=result.scenario, days=result.days,
                        policies=tuple(p.run.policy for p in result.policies),
                        training_tokens_per_day={row["policy"]: float(row["training_tokens_per_day"])
                                                 for row in record["comparison"]},
                        result=result)
