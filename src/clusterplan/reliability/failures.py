"""Failure rates and recovery costs for a job, from catalog/reliability.yaml.

Per-component rates come from Llama 3's 54-day snapshot (419 unexpected interruptions on
16,384 H100 in 2,048 hosts), divided by each component class's exposure (chip-hours or
host-hours), and are scaled by the component counts of the planned system: a 16-chip
Trainium2 host contributes host failures once per 16 chips, not once per 8. Users override any
rate. Checkpoint bytes are the model's unique training state (bf16 weights, fp32 master copy and
Adam moments: 14 B/param); a synchronous checkpoint blocks for bytes / storage bandwidth, an
asynchronous one only for the copy of each chip's shard to host memory.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml

from clusterplan.errors import SpecError
from clusterplan.reliability.model import Recovery, ReliabilityInputs
from clusterplan.specs import Model, System

CHECKPOINT_BYTES_PER_PARAM = 2.0 + 12.0  # bf16 weights + fp32 master weights and two moments
CheckpointMode = Literal["sync", "async"]


@cache
def catalog() -> dict[str, Any]:
    text = resources.files("clusterplan.catalog").joinpath("reliability.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def per_unit_rates() -> dict[str, tuple[str, float]]:
    """Cause -> (unit, interruptions per unit-second) from the reference run."""
    data = catalog()
    reference = data["reference"]
    seconds = reference["days"] * 86400.0
    exposure = {"chip": reference["chips"] * seconds, "host": reference["hosts"] * seconds}
    return {name: (cause["per"], cause["count"] / exposure[cause["per"]]) for name, cause in data["causes"].items()}


def hardware_causes() -> frozenset[str]:
    return frozenset(name for name, cause in catalog()["causes"].items() if cause["hardware"])


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
    recovery = catalog()["recovery"]
    nodes = max(math.ceil(chips / system.chips_per_node), 1)
    return float(recovery["restart_base_s"]["value"] + recovery["restart_per_doubling_s"]["value"] * math.log2(nodes))


def checkpoint_bytes(model: Model) -> float:
    return model.total_params * CHECKPOINT_BYTES_PER_PARAM


def inputs_for(model: Model, system: System, chips: int, replicas: int = 1, checkpoint: CheckpointMode = "sync",
               recovery: Recovery = "spares", storage_bandwidth: float | None = None,
               overrides: dict[str, float] | None = None) -> ReliabilityInputs:
    """Reliability inputs of a training job (see module doc)."""
    if chips < 1:
        raise SpecError("--chips", chips, "must be >= 1")
    defaults = catalog()["recovery"]
    bandwidth = storage_bandwidth or float(defaults["storage_bandwidth"]["value"])
    if bandwidth <= 0:
        raise SpecError("--storage-bandwidth", bandwidth, "must be > 0")
    state = checkpoint_bytes(model)
    if checkpoint == "sync":
        write = state / bandwidth
    else:
        write = state / chips / float(defaults["async_copy_bandwidth_per_chip"]["value"])
    return ReliabilityInputs(
        cause_rates=job_rates(system, chips, overrides),
        planned_rate=planned_rate(),
        detection_s=float(defaults["detection_s"]["value"]),
        restart_s=restart_seconds(system, chips),
        restore_s=state / bandwidth,
        checkpoint_write_s=write,
        min_interval_s=0.0 if checkpoint == "sync" else state / bandwidth,
        repair_s=float(defaults["repair_s"]["value"]),
        hardware_causes=hardware_causes(),
        recovery=recovery,
        replicas=replicas,
    )
