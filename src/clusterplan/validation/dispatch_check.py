"""Kernel-level check of the expert all-to-all against measured dispatch and combine latencies.

The MoE token dispatch and combine of training (``training/step.py: _ep_comm_forward``) and of
wide-EP serving share one formula, :func:`clusterplan.costs.collectives.expert_all_to_all_time`:
each fabric tier carries its bytes at its bandwidth, the slowest tier sets the time; with
de-duplication (DeepEP, HybridEP) a token crosses a tier once per destination domain holding one
of its experts, without it every routed copy travels. Nothing in it is fitted to dispatch
measurements; the family's fitted collective multipliers (``scale_up_collectives``,
``scale_out_collectives``) come from end-to-end rows.

The Megatron-Core MoE report (NVIDIA, arXiv:2603.07685, section 4.2.2, Table 7) times one
dispatch and one combine of HybridEP and of the flat all-to-all at EP 8-64 on GB200 NVL72 (all
inside the NVLink domain) and on DGX H100 (EP >= 16 crosses InfiniBand), at hidden size 7168,
4096 tokens a rank and 256 experts: DeepSeek-V3's layer, whose router picks 8 experts a token.
The table states neither the top-k nor the payload dtype; this check takes DeepSeek-V3's top-8 and
bf16 both ways (the combine is bf16 in every Megatron-Core dispatcher; the dispatch is fp8 only
when a run quantises before dispatch, which a communication benchmark has no reason to do) and
routing spread evenly over the experts. The rows are ``validation/tables/moe_dispatch_latency.csv``
(values as printed in the table, read from a text conversion of the report's PDF).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np

from clusterplan.catalog import load_system
from clusterplan.catalog.loader import hardware_for
from clusterplan.costs import collectives as coll

#: DeepSeek-V3's MoE layer, the shape of the report's benchmark.
HIDDEN = 7168
TOKENS_PER_RANK = 4096
EXPERTS = 256
TOP_K = 8
#: bf16 payload, one token's hidden state.
TOKEN_BYTES = 2.0 * HIDDEN


@dataclass(frozen=True)
class DispatchPoint:
    """One measured dispatch or combine and the model's time for it."""

    system: str
    ep: int
    dispatcher: str  # "hybridep" (de-duplicated) or "alltoall" (every routed copy)
    op: str  # "dispatch" or "combine"
    measured_s: float
    predicted_s: float
    source: str

    @property
    def error(self) -> float:
        """Signed relative error of the predicted time (positive: the model is slower)."""
        return self.predicted_s / self.measured_s - 1.0


def predicted_time(system_name: str, ep: int, dedup: bool) -> float:
    """The model's time of one dispatch (or combine) of the benchmark's layer over ``ep`` ranks of
    ``system_name`` with the family's fitted collective multipliers and per-collective cost."""
    hardware = hardware_for(load_system(system_name))
    phases = coll.decompose(hardware.system, np.array([ep]), np.array([1]))
    moved = coll.expert_all_to_all_time(phases, np.array([float(TOKENS_PER_RANK)]), TOKEN_BYTES, EXPERTS, TOP_K,
                                        dedup, 1.0)
    return float(moved[0]) + hardware.efficiency.collective_overhead_s


def dispatch_points() -> list[DispatchPoint]:
    """Every row of ``moe_dispatch_latency.csv`` with the model's time for it."""
    text = resources.files("clusterplan.validation").joinpath("tables/moe_dispatch_latency.csv").read_text("utf-8")
    points = []
    for row in csv.DictReader(text.splitlines()):
        ep = int(row["ep"])
        points.append(DispatchPoint(
            system=row["system"], ep=ep, dispatcher=row["dispatcher"], op=row["op"],
            measured_s=float(row["latency_us"]) * 1e-6,
            predicted_s=predicted_time(row["system"], ep, row["dispatcher"] == "hybridep"),
            source=row["source"]))
    return points
