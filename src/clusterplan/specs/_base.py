"""Shared pydantic configuration and unit-parsing field types for specs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from clusterplan import units


class Spec(BaseModel):
    """Base of every spec: immutable, unknown keys refused (a typo must not pass silently)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _unit(parser: Any) -> BeforeValidator:
    def parse(value: Any) -> Any:
        if isinstance(value, str):
            return parser(value)
        return value

    return BeforeValidator(parse)


Bytes = Annotated[float, _unit(units.parse_bytes)]
Bandwidth = Annotated[float, _unit(units.parse_bandwidth)]
Flops = Annotated[float, _unit(units.parse_flops)]
Seconds = Annotated[float, _unit(units.parse_duration)]
Watts = Annotated[float, _unit(units.parse_power)]
