"""Power: accelerators by activity, hosts, scale-out network, cooling (PUE).

An accelerator draws ``idle + (TDP - idle) * activity``: ``activity`` is 1 while it runs GEMMs
flat out and falls during communication, bubbles and memory-bound work. For a training step the
activity is the compute share of the step time, plus a fraction of the rest (HBM and links stay
busy while the tensor units wait). Hosts draw their catalog ``node_power_w`` (the vendor system
maximum minus the accelerators: CPUs, memory, NICs, fans), and the scale-out network its switch
power per port. The facility draws the IT load times the PUE. Sources: catalog/economics.yaml.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from clusterplan.specs import Chip, System
from clusterplan.specs.economics import Economics

#: Fraction of the dynamic power an accelerator draws while not computing (communication,
#: bubbles, memory-bound kernels): HBM and link traffic continue. Assumption, documented in
#: docs/rainier.md.
WAITING_ACTIVITY = 0.3


@dataclass(frozen=True)
class PowerBreakdown:
    """Watts drawn by a cluster, by component."""

    accelerators_w: float
    hosts_w: float
    network_w: float
    it_w: float
    facility_w: float

    def record(self) -> dict[str, float]:
        return asdict(self)


def training_activity(time_breakdown: dict[str, Any], step_time: float) -> float:
    """Accelerator activity of a training step: compute share + WAITING_ACTIVITY of the rest."""
    if step_time <= 0:
        return 0.0
    compute = float(time_breakdown.get("compute", 0.0)) / step_time
    return min(1.0, compute + WAITING_ACTIVITY * (1.0 - compute))


def chip_power_w(chip: Chip, activity: float, economics: Economics) -> float:
    idle = economics.chip_idle_fraction.value
    return chip.tdp_w * (idle + (1.0 - idle) * min(max(activity, 0.0), 1.0))


def scale_out_gbps_per_chip(system: System) -> float:
    """Scale-out (outermost tier) bandwidth per chip in Gb/s, one direction."""
    return system.tiers[-1].bandwidth * 8.0 / 1e9


def cluster_power(system: System, chip: Chip, chips: int, activity: float, economics: Economics) -> PowerBreakdown:
    """Power of ``chips`` accelerators built as ``system`` at ``activity`` (1.0 = provisioning)."""
    accelerators = chips * chip_power_w(chip, activity, economics)
    nodes = math.ceil(chips / system.chips_per_node)
    hosts = nodes * (system.node_power_w or 0.0)
    network = chips * scale_out_gbps_per_chip(system) / 100.0 * economics.network_watts_per_chip_per_100gbps.value
    it = accelerators + hosts + network
    return PowerBreakdown(accelerators_w=accelerators, hosts_w=hosts, network_w=network, it_w=it,
                          facility_w=it * economics.pue.value)


def energy_record(power: PowerBreakdown, seconds: float, economics: Economics) -> dict[str, float]:
    """Facility energy (MWh) and emissions (t CO2) of running at ``power`` for ``seconds``."""
    mwh = power.facility_w * seconds / 3.6e9
    return {"energy_mwh": mwh, "co2_tonnes": mwh * 1000.0 * economics.grid_kg_co2_per_kwh.value / 1000.0}
