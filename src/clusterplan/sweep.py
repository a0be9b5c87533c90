"""Sweeps: a YAML file of axes whose cartesian product are the points; each point runs a search.

A sweep file (schema: :class:`SweepFile`, documented in docs/sweep.md) lists ``models``,
``systems``, ``chips``, ``seq_len`` and ``global_batch`` (each a list: an axis), optionally
``precision`` (a list of option sets, or one flat list meaning a single set), ``objective``,
``tokens``, ``max_memory_fraction``, ``up_to``, ``any_shape`` and ``overrides`` (other
search-space fields, each a list of values: an axis too).

:func:`load_sweep` validates the file and every point (names resolved, numbers checked) before
anything runs, so a bad point is refused in one line with nothing computed or written.
:func:`run_sweep` runs ``search(..., top=1)`` on every point through an executor (see
:mod:`clusterplan.distributed`) and returns one flat row per point, in point order.
:func:`write_parquet` writes the rows atomically.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clusterplan import units
from clusterplan.catalog.loader import hardware_for, load_model, load_system, read_yaml
from clusterplan.distributed import Executor
from clusterplan.errors import SpecError
from clusterplan.specs import Model
from clusterplan.specs.plan import MAX_CHIPS
from clusterplan.training.search import SearchSpace, search
from clusterplan.training.step import Hardware

Count = Annotated[int, Field(strict=True, ge=1)]
Name = Annotated[str, Field(strict=True, min_length=1)]
PrecisionName = Literal["bf16", "fp8", "fp4"]
RecomputeName = Literal["none", "selective", "full"]
ZeroStage = Literal[0, 1, 2, 3]


def _option_sets(value: Any) -> Any:
    """``[a, b]`` (one flat list) -> ``[[a, b]]`` (one option set); lists of lists pass through."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return [[value]]
    if isinstance(value, list) and value and not any(isinstance(item, list) for item in value):
        return [value]
    return value


def _no_duplicates(values: tuple[Any, ...]) -> tuple[Any, ...]:
    seen: list[Any] = []
    for value in values:
        if value in seen:
            raise ValueError(f"lists {value!r} twice")
        seen.append(value)
    return values


def _distinct_axis(values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """An axis lists no value twice, and each of its option sets is non-empty and distinct."""
    if values is None:
        return None
    for option_set in values:
        if isinstance(option_set, tuple):
            if not option_set:
                raise ValueError("an option set must list at least one value")
            _no_duplicates(option_set)
    return _no_duplicates(values)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Overrides(_Strict):
    """Other search-space fields; each one given is an axis (a list of values)."""

    max_tp: tuple[Count, ...] | None = Field(None, min_length=1)
    max_cp: tuple[Count, ...] | None = Field(None, min_length=1)
    max_pp: tuple[Count, ...] | None = Field(None, min_length=1)
    max_vp: tuple[Count, ...] | None = Field(None, min_length=1)
    max_micro_batch: tuple[Count, ...] | None = Field(None, min_length=1)
    recompute: tuple[tuple[RecomputeName, ...], ...] | None = Field(None, min_length=1)
    zero: tuple[tuple[ZeroStage, ...], ...] | None = Field(None, min_length=1)
    overlap_tp: tuple[Annotated[bool, Field(strict=True)], ...] | None = Field(None, min_length=1)

    _sets = field_validator("recompute", "zero", mode="before")(_option_sets)

    _distinct = field_validator("*")(_distinct_axis)


class SweepFile(_Strict):
    """The sweep YAML. Axes are lists; their cartesian product are the points."""

    models: tuple[Name, ...] = Field(min_length=1)
    systems: tuple[Name, ...] = Field(min_length=1)
    chips: tuple[Annotated[int, Field(strict=True, ge=1, le=MAX_CHIPS)], ...] = Field(min_length=1)
    seq_len: tuple[Count, ...] = Field(min_length=1)
    global_batch: tuple[Count, ...] = Field(min_length=1)
    precision: tuple[tuple[PrecisionName, ...], ...] = Field((("bf16",),), min_length=1)
    objective: Literal["time", "cost", "energy"] = "time"
    tokens: float | None = None
    max_memory_fraction: float = Field(0.9, gt=0.0, le=1.0)
    up_to: Annotated[bool, Field(strict=True)] = False
    any_shape: Annotated[bool, Field(strict=True)] = False
    overrides: Overrides = Overrides()

    _sets = field_validator("precision", mode="before")(_option_sets)

    _distinct = field_validator("models", "systems", "chips", "seq_len", "global_batch", "precision")(
        _distinct_axis)

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("must be a token count, e.g. 15T")
        try:
            tokens = units.parse_count(value, "tokens")
        except SpecError as error:
            raise ValueError(error.rule) from None
        if not math.isfinite(tokens) or tokens <= 0:
            raise ValueError("must be > 0")
        return tokens


#: Override axes in the order they vary (and their row columns).
OVERRIDE_FIELDS = ("max_tp", "max_cp", "max_pp", "max_vp", "max_micro_batch", "recompute", "zero", "overlap_tp")
#: Columns of an option-set axis: the sets are joined with commas ("bf16,fp8").
SET_COLUMNS = {"precision": "precision_options", "recompute": "recompute_options", "zero": "zero_options"}
PLAN_FIELDS = ("tp", "pp", "vp", "cp", "ep", "dp", "micro_batch", "recompute", "zero", "precision")
FIGURES = ("step_time_s", "tokens_per_s_per_chip", "mfu", "hfu", "memory_bytes_per_chip", "fits_memory")


@dataclass(frozen=True)
class Point:
    """One point of a sweep: resolved specs, the search to run, and its axis values for the row."""

    index: int
    axes: dict[str, Any]
    model: Model
    hardware: Hardware
    chips: int
    seq_len: int
    global_batch: int
    space: SearchSpace
    objective: Literal["time", "cost", "energy"]
    max_memory_fraction: float
    tokens: float | None


@dataclass(frozen=True)
class Sweep:
    path: Path
    spec: SweepFile
    points: list[Point]

    def varying_axes(self) -> list[str]:
        """Row columns of the axes with more than one value."""
        columns = [name for name in ("model", "system", "chips", "seq_len", "global_batch")
                   if len(getattr(self.spec, {"model": "models", "system": "systems"}.get(name, name))) > 1]
        if len(self.spec.precision) > 1:
            columns.append("precision_options")
        for name in OVERRIDE_FIELDS:
            values = getattr(self.spec.overrides, name)
            if values is not None and len(values) > 1:
                columns.append(SET_COLUMNS.get(name, name))
        return columns


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "sweep"


_ALLOWED: dict[str, type[BaseModel]] = {"": SweepFile, "overrides": Overrides}


def _spec_error(error: ValidationError) -> SpecError:
    """The first pydantic error as a SpecError naming the key (``chips[1]``), value and rule."""
    first = error.errors()[0]
    loc = tuple(part for part in first["loc"] if not (isinstance(part, str) and part.startswith(("tuple[", "list["))))
    field, value, rule = _location(loc), first.get("input"), str(first["msg"]).removeprefix("Value error, ")
    kind = first["type"]
    if kind == "extra_forbidden":
        parent = ".".join(str(p) for p in loc[:-1])
        allowed = ", ".join(_ALLOWED.get(parent, SweepFile).model_fields)
        rule, value = f"unknown key (allowed: {allowed})", loc[-1] if loc else value
        field = _location(loc[:-1]) if len(loc) > 1 else "sweep"
    elif kind == "missing":
        rule, value = "required key is missing", loc[-1] if loc else value
        field = _location(loc[:-1]) if len(loc) > 1 else "sweep"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        rule = "must be a mapping"
    elif kind == "too_short":
        rule = "must list at least one value"
    elif kind in ("tuple_type", "list_type"):
        rule = "must be a list"
    return SpecError(field, value, rule)


def _reference(path: Path, reference: str) -> str:
    """A model/system given as a relative YAML path is relative to the sweep file."""
    if reference.endswith((".yaml", ".yml")) and not reference.startswith("~") and not Path(reference).is_absolute():
        return str(path.parent / reference)
    return reference


def point_count(spec: SweepFile) -> int:
    """How many points a sweep file holds: the product of its axes' lengths."""
    axes = [spec.models, spec.systems, spec.chips, spec.seq_len, spec.global_batch, spec.precision]
    axes += [values for name in OVERRIDE_FIELDS if (values := getattr(spec.overrides, name)) is not None]
    return math.prod(len(axis) for axis in axes)


def load_sweep(path: Path, max_points: int | None = None) -> Sweep:
    """Parse and validate a sweep file and every point in it; any problem is a SpecError, a
    grid of more than ``max_points`` points included (refused before any point is built)."""
    data = read_yaml(path, "sweep")
    if not isinstance(data, dict):
        raise SpecError("sweep", str(path), "a sweep file must be a YAML mapping of axes (see docs/sweep.md)")
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as error:
        raise _spec_error(error) from None
    count = point_count(spec)
    if max_points is not None and count > max_points:
        raise SpecError("sweep", f"{count:,} points", f"more than --max-points={max_points:,} (the product of "
                        "the axes' lengths); cut an axis or raise --max-points")
    models = [load_model(_reference(path, name), f"models[{i}]") for i, name in enumerate(spec.models)]
    hardware: list[Hardware] = []
    for i, name in enumerate(spec.systems):
        system = load_system(_reference(path, name), f"systems[{i}]")
        try:
            hardware.append(hardware_for(system))
        except SpecError as error:
            raise SpecError(f"systems[{i}]", name, str(error)) from None
    for i, option_set in enumerate(spec.precision):  # fp8 on a chip without fp8 units is refused
        for precision in option_set:
            for machine in hardware:
                machine.chip.require(precision, f"precision[{i}]")
    overrides = {name: getattr(spec.overrides, name) for name in OVERRIDE_FIELDS
                 if getattr(spec.overrides, name) is not None}
    axes = [list(enumerate(spec.models)), list(enumerate(spec.systems)), spec.chips, spec.seq_len,
            spec.global_batch, spec.precision, *overrides.values()]
    points: list[Point] = []
    for index, combo in enumerate(itertools.product(*axes)):
        (m, model_name), (s, system_name), chips, seq_len, global_batch, precisions, *values = combo
        chosen = dict(zip(overrides, values, strict=True))
        space = _space(spec, precisions, chosen)
        row: dict[str, Any] = {"point": index, "model": model_name, "system": system_name,
                               "chip": hardware[s].chip.name, "chips": chips, "seq_len": seq_len,
                               "global_batch": global_batch, "precision_options": ",".join(precisions)}
        for name, value in chosen.items():
            row[SET_COLUMNS.get(name, name)] = ",".join(str(v) for v in value) if isinstance(value, tuple) else value
        row.update({"objective": spec.objective, "up_to": spec.up_to, "any_shape": spec.any_shape,
                    "max_memory_fraction": spec.max_memory_fraction})
        if spec.tokens is not None:
            row["tokens"] = spec.tokens
        points.append(Point(index, row, models[m], hardware[s], chips, seq_len, global_batch, space,
                            spec.objective, spec.max_memory_fraction, spec.tokens))
    return Sweep(path, spec, points)


def _space(spec: SweepFile, precisions: tuple[str, ...], chosen: dict[str, Any]) -> SearchSpace:
    defaults = SearchSpace()
    settings = dict(defaults.settings)
    if "overlap_tp" in chosen:
        settings["overlap_tp"] = chosen["overlap_tp"]
    space = SearchSpace(
        precisions=precisions,
        recompute=chosen.get("recompute", defaults.recompute),
        zero=chosen.get("zero", defaults.zero),
        max_tp=chosen.get("max_tp", defaults.max_tp),
        max_cp=chosen.get("max_cp", defaults.max_cp),
        max_pp=chosen.get("max_pp", defaults.max_pp),
        max_vp=chosen.get("max_vp", defaults.max_vp),
        max_micro_batch=chosen.get("max_micro_batch", defaults.max_micro_batch),
        chips_at_most=spec.up_to,
        any_shape=spec.any_shape,
        settings=settings,
    )
    return space.validated()


def run_point(point: Point) -> dict[str, Any]:
    """Search one point (``top=1``) and flatten the best plan into a row (in a worker process)."""
    result = search(point.model, point.hardware, point.chips, point.seq_len, point.global_batch,
                    point.space, objective=point.objective, max_memory_fraction=point.max_memory_fraction,
                    top=1, tokens=point.tokens)
    row = dict(point.axes)
    row.update({"status": "ok" if result.best else "no plan", "plans_enumerated": result.plans_enumerated,
                "plans_fitting": result.plans_fitting, "plans_timed": result.plans_timed,
                "search_time_s": result.search_time_s})
    best = result.best[0] if result.best else None
    row["chips_used"] = best["chips"] if best else None
    for name in PLAN_FIELDS:
        row[name] = best["plan"][name] if best else None
    for name in FIGURES:
        row[name] = best[name] if best else None
    if point.tokens is not None:
        row["time_to_train_s"] = best["time_to_train_s"] if best else None
    return row


def run_sweep(sweep: Sweep, executor: Executor,
              on_result: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """One row per point, in point order (whatever order the executor finishes them in)."""
    rows: list[dict[str, Any] | None] = [None] * len(sweep.points)
    for index, row in executor.map_unordered(run_point, sweep.points):
        rows[index] = row
        if on_result is not None:
            on_result(index, row)
    missing = [i for i, row in enumerate(rows) if row is None]
    if missing:
        raise RuntimeError(f"executor returned no result for points {missing}")
    return [row for row in rows if row is not None]


_STRING = ("model", "system", "chip", "precision_options", "recompute_options", "zero_options", "objective",
           "status", "recompute", "precision")
_BOOL = ("up_to", "any_shape", "overlap_tp", "fits_memory")
_FLOAT = ("max_memory_fraction", "tokens", "search_time_s", "step_time_s", "tokens_per_s_per_chip", "mfu", "hfu",
          "memory_bytes_per_chip", "time_to_train_s")


def arrow_table(rows: Sequence[dict[str, Any]]) -> Any:
    """The rows as a ``pyarrow.Table`` with a fixed type per column (nulls where no plan fits)."""
    import pyarrow as pa

    columns = list(rows[0]) if rows else ["point"]
    fields = []
    for name in columns:
        kind = (pa.string() if name in _STRING else pa.bool_() if name in _BOOL
                else pa.float64() if name in _FLOAT else pa.int64())
        fields.append(pa.field(name, kind))
    schema = pa.schema(fields)
    return pa.Table.from_pylist(list(rows), schema=schema)


def write_parquet(rows: Sequence[dict[str, Any]], target: Path) -> None:
    """Write the rows to ``target`` atomically: a temporary file beside it, then a rename."""
    import pyarrow.parquet as pq

    table = arrow_table(rows)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; give it a normal file's mode
        pq.write_table(table, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
