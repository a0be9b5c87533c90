"""Failure rates and recovery costs for a job, from catalog/reliability.yaml.

Per-component rates come from Llama 3's 54-day snapshot (419 unexpected interruptions on
16,384 H100 in 2,048 hosts), divided by each component class's exposure (chip-hours or
host-hours), and are scaled by the component counts of the planned system: a 16-chip
Trainium2 host contributes host failures once per 16 chips, not once per 8. Users override any
rate. Checkpoint bytes are the model's unique training state (bf16 weights, fp32 master copy and
Adam moments: 14 B/param), spread over the chips (each saves its share, as distributed
checkpointing does).

Checkpoints (``RecoverySettings.checkpoint``):

* ``sync``: blocks for bytes / storage bandwidth; restore reads the same bytes back.
* ``async``: blocks only while each chip copies its share to host memory; the write to storage
  runs in the background and must finish before the next checkpoint (the interval floor).
* ``memory`` (Gemini, Wang et al., SOSP 2023): the copy to host memory, then to the host memory
  of a peer over the scale-out network in the background (the interval floor); a restore fetches
  a node's shares from its peer. A persistent checkpoint goes to storage every
  ``persist_interval_s`` (never faster than the storage allows); a hardware failure whose peer
  also fails before the copy is rebuilt (probability ``(node failure rate x outage) ** (copies -
  1)``) restores from storage and redoes on average half a persist interval.

Recovery: ``replacement`` ``spares`` swaps a hot spare in (``spare_swap_s``), ``wait`` waits
``repair_s``; ``elastic`` lets the other data-parallel replicas go on while the node is
replaced (hardware causes only; software failures bring the whole job down).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml

from clusterplan import units
from clusterplan.errors import SpecError
from clusterplan.reliability.model import ReliabilityInputs, Replacement
from clusterplan.specs import Model, System

CHECKPOINT_BYTES_PER_PARAM = 2.0 + 12.0  # bf16 weights + fp32 master weights and two moments
CheckpointMode = Literal["sync", "async", "memory"]
CHECKPOINT_MODES: tuple[CheckpointMode, ...] = ("sync", "async", "memory")
REPLACEMENTS: tuple[Replacement, ...] = ("spares", "wait")
MAX_FAILURE_SCALE = 1000.0


@cache
def catalog() -> dict[str, Any]:
    text = resources.files("clusterplan.catalog").joinpath("reliability.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def default(name: str) -> float:
    """A recovery default from the catalog (each has its ``source`` there)."""
    return float(catalog()["recovery"][name]["value"])


def per_unit_rates() -> dict[str, tuple[str, float]]:
    """Cause -> (unit, interruptions per unit-second) from the reference run."""
    data = catalog()
    reference = data["reference"]
    seconds = reference["days"] * 86400.0
    exposure = {"chip": reference["chips"] * seconds, "host": reference["hosts"] * seconds}
    return {name: (cause["per"], cause["count"] / exposure[cause["per"]]) for name, cause in data["causes"].items()}


def hardware_causes() -> frozenset[str]:
    """Causes confined to one node whose failed part must be replaced (``scope: node``)."""
    return frozenset(name for name, cause in catalog()["causes"].items()
                     if cause["hardware"] and cause.get("scope", "node") == "node")


def job_rates(system: System, chips: int, overrides: dict[str, float] | None = None,
              scale: float = 1.0) -> dict[str, float]:
    """Unexpected interruptions per second of a job on ``chips`` chips of ``system``, by cause.
    ``overrides`` gives per-unit rates (per chip- or host-second) for named causes."""
    hosts = math.ceil(chips / system.chips_per_node)
    counts = {"chip": chips, "host": hosts}
    rates = {}
    for cause, (unit, rate) in per_unit_rates().items():
        if overrides and cause in overrides:
            rate = overrides[cause]
        rates[cause] = rate * counts[unit] * scale
    if overrides:
        unknown = set(overrides) - set(rates)
        if unknown:
            raise SpecError("--failure-rate", sorted(unknown)[0],
                            f"unknown cause (known: {', '.join(sorted(rates))})")
    return rates


def planned_rate() -> float:
    reference = catalog()["reference"]
    return float(reference["planned_interruptions"]) / (float(reference["days"]) * 86400.0)


def restart_seconds(system: System, chips: int) -> float:
    """The catalog's restart: a base plus a term per doubling of the nodes."""
    nodes = max(math.ceil(chips / system.chips_per_node), 1)
    return default("restart_base_s") + default("restart_per_doubling_s") * math.log2(nodes)


def checkpoint_bytes(model: Model) -> float:
    return model.total_params * CHECKPOINT_BYTES_PER_PARAM


def _seconds(value: float | None, flag: str) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise SpecError(flag, value, "must be a finite number of seconds >= 0")


@dataclass(frozen=True)
class RecoverySettings:
    """How a job checkpoints and recovers; ``None`` takes the catalog default (with its source).

    Validated on construction; a refusal names the ``clusterplan reliability`` option.
    """

    checkpoint: CheckpointMode = "sync"
    replacement: Replacement = "spares"
    elastic: bool = False
    fold: bool = True
    detection_s: float | None = None
    restart_s: float | None = None  # None: the catalog's base + per-doubling-of-nodes formula
    swap_s: float | None = None
    elastic_pause_s: float | None = None
    persist_interval_s: float | None = None  # memory checkpoints only
    storage_bandwidth: float | None = None
    failure_scale: float = 1.0
    checkpoint_interval_s: float | None = None  # None: the optimum (clamped to the floor)
    rate_overrides: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.checkpoint not in CHECKPOINT_MODES:
            raise SpecError("--checkpoint", self.checkpoint, f"must be one of {', '.join(CHECKPOINT_MODES)}")
        if self.replacement not in REPLACEMENTS:
            raise SpecError("--recovery", self.replacement, "must be spares, wait or elastic")
        for name in ("detection_s", "restart_s", "swap_s", "elastic_pause_s"):
            _seconds(getattr(self, name), "--" + name.removesuffix("_s").replace("_", "-"))
        if self.persist_interval_s is not None:
            if self.checkpoint != "memory":
                raise SpecError("--persist-interval", self.persist_interval_s,
                                "applies to --checkpoint memory only")
            if not (math.isfinite(self.persist_interval_s) and self.persist_interval_s > 0):
                raise SpecError("--persist-interval", self.persist_interval_s, "must be a finite number of seconds > 0")
        if self.storage_bandwidth is not None and not (math.isfinite(self.storage_bandwidth)
                                                       and self.storage_bandwidth > 0):
            raise SpecError("--storage-bandwidth", self.storage_bandwidth, "must be > 0")
        if not (math.isfinite(self.failure_scale) and 0.0 <= self.failure_scale <= MAX_FAILURE_SCALE):
            raise SpecError("--failure-scale", self.failure_scale, f"must be between 0 and {MAX_FAILURE_SCALE:g}")
        if self.checkpoint_interval_s is not None and not (math.isfinite(self.checkpoint_interval_s)
                                                           and self.checkpoint_interval_s > 0):
            raise SpecError("--checkpoint-interval", self.checkpoint_interval_s, "must be > 0 or auto")

    def label(self) -> str:
        """A short description, e.g. ``memory checkpoints, hot spares, elastic``."""
        parts = [f"{self.checkpoint} checkpoints", "hot spares" if self.replacement == "spares" else "wait for repair"]
        if self.elastic:
            parts.append("elastic")
        if not self.fold:
            parts.append("no folding")
        for name, text in (("detection_s", "detection"), ("restart_s", "restart")):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{text} {value:g} s")
        return ", ".join(parts)

    def flags(self) -> list[str]:
        """The ``clusterplan reliability`` options that give these settings."""
        out = ["--checkpoint", self.checkpoint, "--recovery", self.replacement]
        if self.elastic:
            out.append("--elastic")
        if not self.fold:
            out.append("--no-fold")
        for name in ("detection_s", "restart_s", "swap_s", "elastic_pause_s", "persist_interval_s",
                     "checkpoint_interval_s"):
            value = getattr(self, name)
            if value is not None:
                out += ["--" + name.removesuffix("_s").replace("_", "-"), units.exact_duration(value)]
        if self.storage_bandwidth is not None:
            out += ["--storage-bandwidth", f"{units.exact_count(self.storage_bandwidth)}B/s"]
        if self.failure_scale != 1.0:
            out += ["--failure-scale", repr(self.failure_scale)]
        return out

    def record(self) -> dict[str, object]:
        return {"checkpoint": self.checkpoint, "replacement": self.replacement, "elastic": self.elastic,
                "fold": self.fold, "label": self.label()}


@dataclass(frozen=True)
class CheckpointCosts:
    """What a checkpoint of one job costs (seconds)."""

    write_s: float  # blocks training
    restore_s: float
    floor_s: float  # background work that must end before the next checkpoint
    floor_reason: str
    storage_s: float  # the whole state to or from storage
    persist_interval_s: float | None  # memory checkpoints: the persistent one (clamped)
    persist_clamped: bool


def checkpoint_costs(model: Model, system: System, chips: int, settings: RecoverySettings) -> CheckpointCosts:
    """Write, restore and background times of a checkpoint under ``settings`` (module doc)."""
    state = checkpoint_bytes(model)
    bandwidth = settings.storage_bandwidth or default("storage_bandwidth")
    storage = state / bandwidth
    share = state / chips  # each chip's share of the unique state
    to_host = share / default("async_copy_bandwidth_per_chip")
    if settings.checkpoint == "sync":
        return CheckpointCosts(storage, storage, 0.0, "", storage, None, False)
    if settings.checkpoint == "async":
        return CheckpointCosts(to_host, storage, storage, "the background write to storage", storage, None, False)
    network = system.tiers[-1].effective_bandwidth  # per chip, scale-out tier
    peer = share * (default("memory_copies") - 1.0) / network
    wanted = settings.persist_interval_s or default("persist_interval_s")
    persist = max(wanted, storage)
    return CheckpointCosts(to_host, share / network, peer, "the copy to a peer's host memory", storage,
                           persist, persist > wanted)


def inputs_for(model: Model, system: System, chips: int, replicas: int = 1,
               settings: RecoverySettings | None = None, step_s: float = 0.0) -> ReliabilityInputs:
    """Reliability inputs of a training job on ``chips`` chips in ``replicas`` data-parallel
    replicas, one step taking ``step_s`` (see module doc)."""
    if chips < 1:
        raise SpecError("--chips", chips, "must be >= 1")
    settings = settings or RecoverySettings()
    costs = checkpoint_costs(model, system, chips, settings)
    rates = job_rates(system, chips, settings.rate_overrides or None, scale=settings.failure_scale)
    inputs = ReliabilityInputs(
        cause_rates=rates,
        planned_rate=planned_rate(),
        detection_s=default("detection_s") if settings.detection_s is None else settings.detection_s,
        restart_s=restart_seconds(system, chips) if settings.restart_s is None else settings.restart_s,
        restore_s=costs.restore_s,
        checkpoint_write_s=costs.write_s,
        repair_s=default("repair_s"),
        hardware_causes=hardware_causes(),
        replacement=settings.replacement,
        swap_s=default("spare_swap_s") if settings.swap_s is None else settings.swap_s,
        elastic=settings.elastic,
        elastic_pause_s=default("elastic_pause_s") if settings.elastic_pause_s is None else settings.elastic_pause_s,
        step_s=step_s,
        replicas=replicas,
        fold=settings.fold,
        min_interval_s=costs.floor_s,
        min_interval_reason=costs.floor_reason,
    )
    if costs.persist_interval_s is None:
        return inputs
    # A lost in-memory copy: the node's peer fails too before the copy is rebuilt.
    nodes = max(math.ceil(chips / system.chips_per_node), 1)
    node_rate = inputs.hardware_rate / nodes
    window = inputs.detection_s + inputs.replacement_s + inputs.restart_s + inputs.restore_s
    lost = min(1.0, node_rate * window) ** (default("memory_copies") - 1.0)
    extra = lost * (costs.persist_interval_s / 2.0 + costs.storage_s - costs.restore_s)
    return dataclasses.replace(inputs, lost_copy_s=extra)


def recovery_settings(data: Any, where: str) -> RecoverySettings:
    """The scenario's ``reliability:`` mapping as :class:`RecoverySettings`; a number may be
    written ``{value: 30s, source: "..."}`` (every number in the catalog carries its source)."""
    if data is None:
        return RecoverySettings()
    if not isinstance(data, dict):
        raise SpecError(where, data, "must be a mapping of recovery settings")
    known = ("checkpoint", "recovery", "elastic", "fold", "detection", "restart", "swap", "elastic_pause",
             "persist_interval", "storage_bandwidth", "failure_scale", "source")
    for key in data:
        if key not in known:
            raise SpecError(f"{where}.{key}", data[key], f"unknown setting (known: {', '.join(known)})")

    def value(key: str) -> Any:
        item = data.get(key)
        if isinstance(item, dict):
            if not item.get("source"):
                raise SpecError(f"{where}.{key}", item, "a {value, source} mapping needs a source")
            return item.get("value")
        return item

    durations: dict[str, float | None] = {}
    for key in ("detection", "restart", "swap", "elastic_pause", "persist_interval"):
        item = value(key)
        durations[f"{key}_s"] = None if item is None else units.parse_duration(item, f"{where}.{key}")
    recovery = str(value("recovery") or "spares")
    if recovery not in ("spares", "wait", "elastic"):
        raise SpecError(f"{where}.recovery", recovery, "must be spares, wait or elastic")
    bandwidth = value("storage_bandwidth")
    return RecoverySettings(
        checkpoint=str(value("checkpoint") or "sync"),  # type: ignore[arg-type]  # validated there
        replacement="wait" if recovery == "elastic" else recovery,  # type: ignore[arg-type]
        elastic=bool(value("elastic")) or recovery == "elastic",
        fold=bool(value("fold") if value("fold") is not None else True),
        failure_scale=1.0 if value("failure_scale") is None else float(value("failure_scale")),
        storage_bandwidth=None if bandwidth is None else units.parse_bandwidth(bandwidth, f"{where}.storage_bandwidth"),
        detection_s=durations["detection_s"], restart_s=durations["restart_s"], swap_s=durations["swap_s"],
        elastic_pause_s=durations["elastic_pause_s"], persist_interval_s=durations["persist_interval_s"])
