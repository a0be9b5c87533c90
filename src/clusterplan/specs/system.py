"""A system: nodes of chips joined by a hierarchy of fabric tiers.

Tiers are listed innermost first. Tier ``i`` joins ``size`` chips into one domain (its size
counts chips, cumulative over inner tiers): e.g. DGX H100 is NVLink (8) then InfiniBand
(unbounded); a Trn2 UltraServer is a 4x4 NeuronLink torus (16), NeuronLink across four
instances (64), then EFA (unbounded).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from clusterplan.specs._base import Bandwidth, Seconds, Spec, Watts


class FabricTier(Spec):
    """One level of the interconnect, as seen by one chip.

    ``bandwidth`` is the per-chip, per-direction bandwidth a chip can inject into this tier
    (all its links of this tier together). ``efficiency`` is the fraction of it that collectives
    achieve in practice (bus bandwidth / link bandwidth, e.g. from nccl-tests), with its source.
    A torus tier gives its ``dims``; a group that spans k of its d dimensions uses k/d of the
    bandwidth, and its ring steps grow with the sum of the dimension lengths, not their product.
    """

    name: str
    topology: Literal["switch", "torus"]
    size: int | None = Field(default=None, ge=1, description="chips per domain; None = whole cluster")
    dims: tuple[int, ...] = ()
    bandwidth: Bandwidth = Field(gt=0)
    latency_s: Seconds = Field(ge=0)
    efficiency: float = Field(default=0.8, gt=0, le=1)
    oversubscription: float = Field(default=1.0, ge=1)
    source: str = Field(min_length=3)

    @model_validator(mode="after")
    def _check_torus(self) -> FabricTier:
        if self.topology == "torus":
            if not self.dims:
                raise ValueError(f"tier {self.name}: a torus needs dims")
            if self.size is not None and self.size % math.prod(self.dims) != 0:
                raise ValueError(f"tier {self.name}: size {self.size} is not a multiple of dims")
        return self

    @property
    def effective_bandwidth(self) -> float:
        """Bytes/s per chip per direction that collectives achieve on this tier."""
        return self.bandwidth * self.efficiency / self.oversubscription


class System(Spec):
    """A buildable unit of a cluster: chip, node size, fabric tiers."""

    name: str
    chip: str
    chips_per_node: int = Field(ge=1)
    tiers: tuple[FabricTier, ...] = Field(min_length=1)
    node_power_w: Watts | None = Field(default=None, gt=0, description="non-accelerator power per node")
    allocation_chips: int | None = Field(
        default=None, ge=1,
        description="chips a job is allocated in when that is less than the scale-up domain (TPU: a "
        "4x4x4 cube of a larger ICI domain; NVL72: a 64-GPU segment of a rack); None = the scale-up "
        "domain. Whole hosts, inside one domain")
    allocation_source: str = ""
    aliases: tuple[str, ...] = ()
    notes: str = ""
    source: str = Field(min_length=3)

    @model_validator(mode="after")
    def _check_tiers(self) -> System:
        previous = 1
        for index, tier in enumerate(self.tiers):
            last = index == len(self.tiers) - 1
            if tier.size is None and not last:
                raise ValueError(f"tier {tier.name}: only the outermost tier may be unbounded")
            if tier.size is not None:
                if tier.size % previous != 0:
                    raise ValueError(
                        f"tier {tier.name}: size {tier.size} is not a multiple of the inner "
                        f"domain ({previous})"
                    )
                previous = tier.size
        if self.tiers[-1].size is not None:
            raise ValueError("the outermost tier must be unbounded (size: null), e.g. the scale-out network")
        if self.allocation_chips is not None:
            if self.allocation_chips > self.scale_up_size or self.allocation_chips % self.chips_per_node != 0:
                raise ValueError(f"allocation_chips {self.allocation_chips} must be whole nodes of "
                                 f"{self.chips_per_node} chips inside one scale-up domain ({self.scale_up_size})")
            if len(self.allocation_source.strip()) < 3:
                raise ValueError("allocation_chips needs allocation_source (where the unit comes from)")
        return self

    @property
    def scale_up_size(self) -> int:
        """Chips in the largest bounded domain (NVLink domain, UltraServer, torus slice)."""
        bounded = [tier.size for tier in self.tiers if tier.size is not None]
        return max(bounded) if bounded else 1

    @property
    def allocation_size(self) -> int:
        """Chips a job comes in (the plan search's whole units): ``allocation_chips`` where the
        catalog gives it (TPU cubes, NVL72 segments), else the scale-up domain (a DGX node, a
        Trn2 UltraServer). One unit sits inside one scale-up domain."""
        return self.allocation_chips or self.scale_up_size
