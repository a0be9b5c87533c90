"""An accelerator chip: dense peak throughput per precision, HBM, power."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from clusterplan.specs._base import Bandwidth, Bytes, Flops, Spec, Watts

Precision = Literal["fp32", "bf16", "fp8", "fp4"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp8", "fp4")


class Chip(Spec):
    """One accelerator. All figures are dense (no structured sparsity), SI units.

    ``family`` selects the fitted efficiency parameters (``catalog/efficiency.yaml``): chips of
    one micro-architecture and software stack share kernel and memory efficiencies.
    """

    name: str
    vendor: str
    family: str
    launch_year: int = Field(ge=2015, le=2035)
    peak_flops: dict[Precision, Flops]
    hbm_bytes: Bytes = Field(gt=0)
    hbm_bandwidth: Bandwidth = Field(gt=0)
    tdp_w: Watts = Field(gt=0)
    aliases: tuple[str, ...] = ()
    notes: str = ""
    source: str = Field(min_length=3)

    @field_validator("peak_flops")
    @classmethod
    def _needs_bf16(cls, value: dict[str, float]) -> dict[str, float]:
        if "bf16" not in value:
            raise ValueError("peak_flops must include bf16")
        for precision, flops in value.items():
            if flops <= 0:
                raise ValueError(f"peak_flops.{precision} must be > 0")
        return value

    def peak(self, precision: Precision) -> float:
        """Dense peak FLOP/s for a matmul precision; a chip without fp8/fp4 units runs them at
        the next wider precision it has (e.g. A100 runs 'fp8' plans at bf16 speed)."""
        order = PRECISIONS[PRECISIONS.index(precision):: -1]
        for candidate in order:
            if candidate in self.peak_flops and candidate != "fp32":
                return self.peak_flops[candidate]
        return self.peak_flops["bf16"]
