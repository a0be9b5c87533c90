"""Shared pydantic configuration and unit-parsing field types for specs."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator

from clusterplan import units


def _admits_bool(annotation: Any) -> bool:
    """Whether a field of this type may hold ``true``/``false`` (a bool, Any, a Literal of one)."""
    if annotation is bool or annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _admits_bool(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_admits_bool(arg) for arg in get_args(annotation))
    if origin is Literal:
        return any(isinstance(arg, bool) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)  # checked by its own fields


def _bool_in(annotation: Any, value: Any) -> bool:
    """Whether ``value`` holds a bool where ``annotation`` wants something else (a count, a
    size, a list of counts): pydantic's lax mode would read ``true`` as 1."""
    if isinstance(value, bool):
        return not _admits_bool(annotation)
    origin = get_origin(annotation)
    if origin is Annotated:
        return _bool_in(get_args(annotation)[0], value)
    if origin in (Union, types.UnionType):
        return all(_bool_in(arg, value) for arg in get_args(annotation) if arg is not type(None))
    args = get_args(annotation)
    if origin in (tuple, list) and isinstance(value, list | tuple) and args:
        items = [args[0]] * len(value) if origin is list or args[-1] is Ellipsis else list(args)
        return any(_bool_in(item, element) for item, element in zip(items, value, strict=False))
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return any(_bool_in(args[1], element) for element in value.values())
    return False


def _number_for_bool(annotation: Any, value: Any) -> bool:
    """Whether ``value`` is a number where ``annotation`` wants only a bool: pydantic's lax mode
    would read ``dropout: 1`` as true and ``dropout: 0.5`` (a rate, meant for another tool) as an
    error about "a valid boolean"; either way the number was not what the field means."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if get_origin(annotation) is Annotated:
        return _number_for_bool(get_args(annotation)[0], value)
    return annotation is bool


class Spec(BaseModel):
    """Base of every spec: immutable, unknown keys refused (a typo must not pass silently), no
    ``true``/``false`` where a number is wanted (``layers: true`` is not 1 layer) and no number
    where only ``true``/``false`` is (``dropout: 1`` is not a switch)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _bool_in(field.annotation, value):
            raise ValueError(f"must be a number, not {str(value).lower()}"
                             if isinstance(value, bool) else "must hold numbers, not true/false")
        if field is not None and _number_for_bool(field.annotation, value):
            raise ValueError(f"must be true or false, not the number {value}")
        return value


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
