"""Resolve catalog names (or paths to YAML files of the same schema) into frozen specs.

Every failure becomes a SpecError naming the field, the value and the rule, so the CLI can
refuse in one line: unknown names suggest the closest catalog entries.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

from clusterplan.costs.attention import head_dim_ratios, kernel_rates, reference_kernel
from clusterplan.costs.compute import Efficiency
from clusterplan.errors import SpecError, shorten, show
from clusterplan.specs import Chip, Model, System
from clusterplan.specs.accuracy import CrossValSummary
from clusterplan.specs.economics import Economics
from clusterplan.specs.kernels import AttentionEntry, GemmEntry, HbmEntry, KernelCatalog, KernelEntry
from clusterplan.training.step import Hardware

#: Where `clusterplan calibrate` stores the cross-validated errors of its fit.
CROSSVAL_FILE = "crossval.yaml"

SpecT = TypeVar("SpecT", bound=BaseModel)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where the name cannot even be looked up (too long, a NUL)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


#: Largest YAML file read (bytes): specs, plans, sweeps and scenarios are a few kB; the bound
#: keeps memory bounded whatever the path names (``/dev/zero``, a multi-GB file).
MAX_YAML_BYTES = 8 * 2**20
#: Deepest nesting of mappings and lists in a YAML file (a bound, not a recursion error).
MAX_YAML_DEPTH = 64


class RefusedYAML(yaml.MarkedYAMLError):
    """Well-formed YAML this project does not accept: an alias, or nesting beyond the cap."""


class _NoDuplicateKeys:
    """A mapping with a key written twice is refused (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping; a key written twice is refused."""
        # Merge keys (<<) first, as the parent method does.
        self.flatten_mapping(node)  # type: ignore[attr-defined]
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[attr-defined]
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the parent method says so
                break
            if duplicate:
                raise RefusedYAML(problem=f"key {shorten(repr(key), 60)} is given twice",
                                  problem_mark=key_node.start_mark)
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)  # type: ignore[misc]
        return result


class SafeLoader(_NoDuplicateKeys, yaml.SafeLoader):
    """PyYAML's safe loader without aliases of lists or mappings, and with a depth cap.

    An alias (``*name``) repeats a node by reference, so nine levels of ten aliases of a list
    each turn a 1 kB file into 10^9 values ("billion laughs") as soon as anything walks it. An
    alias of a list or mapping is therefore refused where it appears, before anything is
    expanded; an alias of a scalar (a shared ``source:`` string, as the catalog uses) repeats
    one value and is kept. Nesting deeper than :data:`MAX_YAML_DEPTH` is refused too, before
    Python's recursion limit is reached.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            target = self.anchors.get(event.anchor)
            if target is not None and not isinstance(target, yaml.ScalarNode):
                raise RefusedYAML(problem=f"an alias of a list or mapping (*{event.anchor}) is not "
                                  "accepted; write the value out", problem_mark=event.start_mark)
        if self._depth >= MAX_YAML_DEPTH:
            raise RefusedYAML(problem=f"nested deeper than {MAX_YAML_DEPTH} levels",
                              problem_mark=self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

#: The shipped catalog is the project's own text: libyaml's C parser reads it about 8x faster
#: than the pure-Python one (every command loads it). Duplicate keys are still refused; the alias
#: and depth guards of :class:`SafeLoader` are for files a user passes in, which always go
#: through :func:`parse_yaml`.
_CatalogLoader: type = type("_CatalogLoader", (_NoDuplicateKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)), {})


def parse_yaml(text: str) -> Any:
    """Parse YAML text with :class:`SafeLoader` (the one YAML loader of the project)."""
    return yaml.load(text, Loader=SafeLoader)  # a SafeLoader subclass: safe


def read_text(path: Path, field: str, limit: int = MAX_YAML_BYTES) -> str:
    """A UTF-8 text file of at most ``limit`` bytes; anything else is a SpecError on ``field``
    naming the file (missing, unreadable, a folder, too large, not UTF-8)."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(limit + 1)
    except OSError as error:
        raise SpecError(field, str(path), f"cannot read file ({error.strerror or error})") from None
    except ValueError as error:  # a NUL in the path
        raise SpecError(field, str(path), f"not a usable path ({error})") from None
    if len(raw) > limit:
        raise SpecError(field, str(path), f"file is larger than {limit // 2**20} MiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(field, str(path), f"not UTF-8 text (byte 0x{raw[error.start]:02x} at offset "
                        f"{error.start:,})") from None


def read_yaml(path: Path, field: str) -> Any:
    """Parse a YAML file; a missing, unreadable, oversized, non-UTF-8 or malformed file, an alias
    or too deep a nesting is a SpecError on ``field``."""
    text = read_text(path, field)
    try:
        return parse_yaml(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or getattr(error, "reason", None) or "syntax error"
        kind = "refused YAML" if isinstance(error, RefusedYAML) else "malformed YAML"
        raise SpecError(field, str(path), f"{kind}{where}: {problem}") from None
    except (ValueError, OverflowError, RecursionError) as error:  # e.g. a timestamp 2025-13-40
        raise SpecError(field, str(path), f"malformed YAML: {shorten(str(error))}") from None


def _catalog_text(filename: str) -> Any:
    resource = resources.files("clusterplan.catalog").joinpath(filename)
    return yaml.load(resource.read_text(encoding="utf-8"), Loader=_CatalogLoader)  # safe: a SafeLoader


def validation_message(error: ValidationError) -> str:
    """First pydantic error as 'location: message' (one line)."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "entry"
    message = str(first["msg"]).removeprefix("Value error, ")
    value = first.get("input")
    shown = f" (got {show(value)})" if not isinstance(value, dict | list) and value is not None else ""
    return f"{location}: {message}{shown}"


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (directly, optionally or as list items), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def spec_error(error: ValidationError, prefix: str, model: type[BaseModel]) -> SpecError:
    """The first pydantic error of a file validated against ``model`` as a SpecError on
    ``prefix.key[i].key`` naming the value and the rule; an unknown key lists the known ones."""
    first = error.errors()[0]
    loc = list(first["loc"])
    where = prefix
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    rule = str(first["msg"]).removeprefix("Value error, ")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, SpecError):  # a unit parser's refusal: its rule, without its own field name
        rule = cause.rule
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        owner: type[BaseModel] | None = model
        for part in loc[:-1]:
            if isinstance(part, str) and owner is not None and part in owner.model_fields:
                owner = _nested_model(owner.model_fields[part].annotation)
        known = ", ".join(owner.model_fields) if owner is not None else ""
        close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1) if owner else []
        rule = f"unknown key; did you mean {close[0]}?" if close else f"unknown key (known: {known})"
    elif first["type"] == "missing":
        rule, value = "required key is missing", None
    return SpecError(where, value if not isinstance(value, dict) else "{...}", rule)


def build(spec_type: type[SpecT], data: Any, field: str, origin: str) -> SpecT:
    if not isinstance(data, dict):
        raise SpecError(field, origin, f"expected a mapping of {spec_type.__name__} fields")
    try:
        return spec_type.model_validate(data)
    except ValidationError as error:
        raise SpecError(field, origin, validation_message(error)) from None


@cache
def _entries(filename: str) -> dict[str, dict[str, Any]]:
    """Catalog entries of one file keyed by normalised name and alias."""
    table: dict[str, dict[str, Any]] = {}
    for entry in _catalog_text(filename):
        for key in (entry["name"], *entry.get("aliases", ())):
            table[_normalise(key)] = entry
    return table


def _names(filename: str) -> list[str]:
    return [entry["name"] for entry in _catalog_text(filename)]


def user_path(reference: str, field: str) -> Path:
    """``reference`` as a path with ``~`` or ``~user`` expanded; a SpecError naming the field
    when the home directory cannot be found (an unknown user, no HOME)."""
    try:
        return Path(reference).expanduser()
    except RuntimeError:
        raise SpecError(field, reference, "starts with ~ but names no home directory on this machine") from None


def _resolve(spec_type: type[SpecT], filename: str, reference: str, field: str) -> SpecT:
    path = user_path(reference, field)
    if reference.endswith((".yaml", ".yml")) or _is_file(path):
        data = read_yaml(path, field)
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        return build(spec_type, data, field, reference)
    entries = _entries(filename)
    key = _normalise(reference)
    if key not in entries:
        close = difflib.get_close_matches(key, list(entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SpecError(
            field, reference,
            f"unknown {spec_type.__name__.lower()} (see `clusterplan catalog "
            f"{filename.removesuffix('.yaml')}`){hint}",
        )
    return _cached_build(spec_type, filename, _normalise(entries[key]["name"]), field)


_built: dict[tuple[str, str], Any] = {}


def _cached_build(spec_type: type[SpecT], filename: str, key: str, field: str) -> SpecT:
    cache_key = (filename, key)
    if cache_key not in _built:
        _built[cache_key] = build(spec_type, _entries(filename)[key], field, key)
    result: SpecT = _built[cache_key]
    return result


def load_chip(reference: str, field: str = "chip") -> Chip:
    return _resolve(Chip, "chips.yaml", reference, field)


def load_system(reference: str, field: str = "system") -> System:
    return _resolve(System, "systems.yaml", reference, field)


def load_model(reference: str, field: str = "model") -> Model:
    """A catalog model by name, a model file of the user's (YAML, no ``source:`` needed: the
    catalog's entries keep theirs), or a Hugging Face ``config.json`` (catalog/hf_config.py)."""
    path = user_path(reference, field)
    if not (reference.endswith((".yaml", ".yml", ".json")) or _is_file(path)):
        return _resolve(Model, "models.yaml", reference, field)
    data = read_yaml(path, field)  # JSON is YAML: the one bounded loader for both
    from clusterplan.catalog.hf_config import is_hf_config, model_spec

    if is_hf_config(data):
        assert isinstance(data, dict)
        return build(Model, model_spec(data, reference), field, reference)
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if isinstance(data, dict) and "source" not in data:
        data = {**data, "source": f"the user's model file {reference} (no source given)"}
    return build(Model, data, field, reference)


def chip_names() -> list[str]:
    return _names("chips.yaml")


def system_names() -> list[str]:
    return _names("systems.yaml")


def model_names() -> list[str]:
    return _names("models.yaml")


def scenario_names() -> list[str]:
    """The built-in scenarios (catalog/scenarios/*.yaml), by name."""
    return sorted(p.name.removesuffix(".yaml") for p in
                  resources.files("clusterplan.catalog").joinpath("scenarios").iterdir() if p.name.endswith(".yaml"))


def load_scenario(reference: str, field: str = "scenario") -> dict[str, Any]:
    """A scenario YAML: a built-in name under catalog/scenarios/ or a path."""
    path = user_path(reference, field)
    if reference.endswith((".yaml", ".yml")) or _is_file(path):
        data = read_yaml(path, field)
    else:
        resource = resources.files("clusterplan.catalog").joinpath(f"scenarios/{reference}.yaml")
        if not resource.is_file():
            raise SpecError(field, reference, f"unknown scenario (built-in: {', '.join(scenario_names())})")
        data = parse_yaml(resource.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise SpecError(field, reference, "a scenario must be a YAML mapping")
    return data


@cache
def _efficiency_table() -> dict[str, dict[str, Any]]:
    data = _catalog_text("efficiency.yaml") or {}
    return {entry["family"]: entry for entry in data.get("families", [])}


def load_efficiency(family: str) -> Efficiency:
    """Fitted efficiencies of a chip family (see ``clusterplan calibrate``)."""
    table = _efficiency_table()
    if family not in table:
        known = ", ".join(sorted(table)) or "none"
        raise SpecError("chip.family", family, f"no efficiency parameters for this family (known: {known})")
    return build(Efficiency, table[family], "chip.family", family)


def hardware_for(system: System, chip: Chip | None = None) -> Hardware:
    """A system with its chip (catalog chip unless given) and that family's efficiencies."""
    resolved = chip if chip is not None else load_chip(system.chip, field="system.chip")
    return Hardware(system=system, chip=resolved, efficiency=load_efficiency(resolved.family))


@cache
def family_chips(family: str) -> tuple[str, ...]:
    """The catalog chips of a family (its kernel measurements are any of theirs)."""
    return tuple(name for name in chip_names() if load_chip(name).family == family)


@cache
def attention_kernel_rates(family: str) -> dict[str, float]:
    """Each named attention kernel's rate relative to the family's reference kernel
    (:func:`clusterplan.costs.attention.reference_kernel`), measured on the family's catalog chips
    (:func:`clusterplan.costs.attention.kernel_rates`); empty where the catalog has no such
    measurements."""
    return kernel_rates(load_kernels(), family_chips(family), reference_kernel(family))


@cache
def attention_head_dim_ratios(family: str) -> dict[str, dict[int, float]]:
    """Each attention kernel's measured rate by head dimension over its rate at 128 on the
    family's catalog chips (:func:`clusterplan.costs.attention.head_dim_ratios`); kernels
    measured at head dimension 128 only are left out."""
    return head_dim_ratios(load_kernels(), family_chips(family), reference_kernel(family))


@cache
def load_economics() -> Economics:
    """The energy and money assumptions of catalog/economics.yaml."""
    return build(Economics, _catalog_text("economics.yaml"), "economics", "catalog/economics.yaml")


def load_crossval() -> CrossValSummary | None:
    """The cross-validated errors stored by the last ``clusterplan calibrate`` (None if absent)."""
    resource = resources.files("clusterplan.catalog").joinpath(CROSSVAL_FILE)
    if not resource.is_file():
        return None
    return build(CrossValSummary, _catalog_text(CROSSVAL_FILE), "catalog", CROSSVAL_FILE)


#: File of public kernel-level measurements (GEMM, attention, HBM, collectives) per chip.
KERNELS_FILE = "kernels.yaml"
#: Largest relative gap between an entry's stated fraction and achieved / catalog peak.
KERNEL_FRACTION_TOLERANCE = 0.01


def kernel_peak(entry: KernelEntry, chip: Chip) -> float | None:
    """The catalog figure an entry's fraction is taken against: the dense peak FLOP/s of its
    precision (fp16 at the bf16 peak) for GEMM and attention, the spec HBM bandwidth (bytes/s)
    for HBM, None for collectives (no single peak)."""
    if isinstance(entry, GemmEntry | AttentionEntry):
        precision = "bf16" if entry.precision == "fp16" else entry.precision
        chip.require(precision, f"kernels.{entry.chip}.precision")
        return chip.peak(precision)
    if isinstance(entry, HbmEntry):
        return chip.hbm_bandwidth
    return None


def check_kernel_entry(index: int, entry: KernelEntry) -> None:
    """Refuse (SpecError) an entry whose chip is not a catalog name, whose precision the chip has
    no units for, or whose fraction is more than 1 % off achieved / catalog peak."""
    field = f"kernels.entries[{index}]"
    if entry.chip not in chip_names():
        close = difflib.get_close_matches(entry.chip, chip_names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SpecError(f"{field}.chip", entry.chip, f"not a catalog chip name (chips.yaml){hint}")
    peak = kernel_peak(entry, load_chip(entry.chip, field=f"{field}.chip"))
    if peak is None:
        return
    if isinstance(entry, GemmEntry):
        pairs = [(entry.tflops * 1e12, entry.fraction_of_peak)]
    elif isinstance(entry, AttentionEntry):
        pairs = [(point.tflops * 1e12, point.fraction_of_peak) for point in entry.points]
    elif isinstance(entry, HbmEntry):
        pairs = [(entry.gbps * 1e9, entry.fraction_of_spec)]
    else:
        return
    for achieved, stated in pairs:
        implied = achieved / peak
        if abs(stated - implied) > KERNEL_FRACTION_TOLERANCE * implied:
            raise SpecError(f"{field}.fraction", stated,
                            f"achieved / catalog peak of {entry.chip} is {implied:.4f}")


@cache
@cache
def load_kernels() -> KernelCatalog:
    """The public kernel-level measurements of catalog/kernels.yaml, each entry checked against
    the chip catalog: a known chip name, and its fraction within 1 % of achieved / catalog peak."""
    catalog = build(KernelCatalog, _catalog_text(KERNELS_FILE), "kernels", f"catalog/{KERNELS_FILE}")
    for index, entry in enumerate(catalog.entries):
        check_kernel_entry(index, entry)
    return catalog
