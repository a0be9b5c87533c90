"""An accelerator chip: dense peak throughput per precision, HBM, power."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from clusterplan.errors import SpecError
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
    compute_units: int | None = Field(
        default=None, ge=1, le=100_000,
        description="streaming multiprocessors (NVIDIA) or compute units (AMD): communication kernels "
        "overlapping compute take some of them; None where collectives run on their own engines "
        "(TPU, Trainium, Gaudi)")
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

    def matmul_precisions(self) -> tuple[str, ...]:
        """The matmul precisions this chip has units for (a peak in the catalog), widest first."""
        return tuple(p for p in PRECISIONS if p in self.peak_flops and p != "fp32")

    def require(self, precision: str, field: str) -> None:
        """Refuse (:class:`SpecError` on ``field``) a matmul precision this chip has no units for:
        an fp8 plan on a chip without fp8 is bad input, not a bf16 plan in disguise."""
        if precision not in self.matmul_precisions():
            raise SpecError(field, precision, f"chip {self.name} has no {precision} matmul units "
                            f"(it has {', '.join(self.matmul_precisions())})")

    def peak(self, precision: Precision) -> float:
        """Dense peak FLOP/s for a matmul precision; a chip without fp8/fp4 units runs them at
        the next wider precision it has (e.g. A100 runs 'fp8' plans at bf16 speed)."""
        order = PRECISIONS[PRECISIONS.index(precision):: -1]
        for candidate in order:
            if candidate in self.peak_flops and candidate != "fp32":
                return self.peak_flops[candidate]
        return self.peak_flops["bf16"]
