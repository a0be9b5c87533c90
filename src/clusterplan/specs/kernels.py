"""Public kernel-level measurements per chip (catalog/kernels.yaml): every number with its source.

Four kinds of entry, each a measured figure from a public source (a paper's figure or table, a
vendor's acceptance guide, a benchmark repository, an issue thread with the tool's output):

- ``gemm``: one dense matrix multiply, achieved TFLOP/s and the fraction of the chip's dense peak;
- ``attention``: a fused attention kernel, achieved TFLOP/s over sequence lengths (a curve);
- ``hbm``: a STREAM-like device-memory bandwidth and the fraction of the chip's spec bandwidth;
- ``collective``: bus bandwidth of one collective over message sizes (a curve), with its fabric.

The fractions are against *this catalog's* chip peaks (chips.yaml), not the source's own: the
loader (:func:`clusterplan.catalog.loader.load_kernels`) refuses a fraction more than 1 % off
``achieved / catalog peak``, and a chip name the catalog does not know.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from clusterplan.specs._base import Spec

#: Largest fraction of a peak accepted: a little over 1 for peaks that are themselves rounded.
MAX_FRACTION = 1.05

#: Precisions of the measured kernels; fp16 runs at the bf16 tensor peak on every catalog chip
#: that has a tensor fp16 path (A100, H100/H200, MI300X), so its fraction is against bf16.
KernelPrecision = Literal["fp16", "bf16", "fp8"]

Fraction = Annotated[float, Field(gt=0, le=MAX_FRACTION)]
Positive = Annotated[float, Field(gt=0)]


class _Entry(Spec):
    """What every measurement carries: the chip, where the number comes from, and how it was run."""

    chip: str = Field(min_length=2, description="a catalog chip name (chips.yaml), not an alias")
    source: str = Field(min_length=15, description="URL or arXiv id + figure/table, commit for files")
    measured_with: str = Field(default="", description="library, version, benchmark tool")
    date: str = Field(default="", description="when the measurement was published")
    notes: str = ""


class GemmEntry(_Entry):
    """One matrix multiply: C[M,N] = A[M,K] B[K,N], ``batch`` times (2 M N K batch FLOPs)."""

    kind: Literal["gemm"]
    precision: KernelPrecision
    shape: tuple[int, int, int] | None = Field(default=None, description="(M, N, K)")
    batch: int = Field(default=1, ge=1)
    size_class: str = Field(default="", description="e.g. 'best shape of a sweep' when no one shape")
    tflops: Positive
    fraction_of_peak: Fraction

    @model_validator(mode="after")
    def _shape_positive(self) -> GemmEntry:
        if self.shape is not None and min(self.shape) < 1:
            raise ValueError(f"shape {self.shape}: every dimension must be >= 1")
        if self.shape is None and not self.size_class:
            raise ValueError("give the shape (M, N, K) or a size_class")
        return self


class AttentionPoint(Spec):
    """One sequence length of an attention curve."""

    seq_len: int = Field(ge=1)
    tflops: Positive
    fraction_of_peak: Fraction


class AttentionEntry(_Entry):
    """A fused attention kernel over sequence lengths (FLOPs as the FlashAttention papers count
    them: forward 4 * batch * heads * seq^2 * head_dim, halved when causal; backward 2.5x)."""

    kind: Literal["attention"]
    implementation: str = Field(min_length=2, description="e.g. FlashAttention-3, cuDNN")
    direction: Literal["fwd", "bwd", "fwd_bwd"]
    causal: bool
    head_dim: int = Field(ge=1)
    precision: KernelPrecision
    batch_heads: str = Field(default="", description="how batch and head count were chosen")
    points: tuple[AttentionPoint, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _sorted_points(self) -> AttentionEntry:
        lengths = [point.seq_len for point in self.points]
        if lengths != sorted(set(lengths)):
            raise ValueError(f"points must have increasing, distinct seq_len (got {lengths})")
        return self


class HbmEntry(_Entry):
    """Device-memory bandwidth of a streaming kernel (STREAM/BabelStream Copy or Triad)."""

    kind: Literal["hbm"]
    operation: Literal["copy", "triad", "read", "write"]
    benchmark: str = Field(min_length=2, description="e.g. 'BabelStream 5.0, CUDA, fp64'")
    gbps: Positive = Field(description="achieved bandwidth, GB/s (1e9 bytes/s)")
    fraction_of_spec: Fraction


class CollectivePoint(Spec):
    """One message size of a collective curve; ``message_bytes`` None where the source gives the
    peak of a sweep without its size."""

    message_bytes: int | None = Field(default=None, ge=1)
    busbw_gbps: Positive
    algbw_gbps: float | None = Field(default=None, gt=0)


class CollectiveEntry(_Entry):
    """Bus bandwidth (nccl-tests definition: algbw x 2(n-1)/n for all-reduce, (n-1)/n for
    all-gather and reduce-scatter, algbw for a permute) over message sizes."""

    kind: Literal["collective"]
    op: Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "permute"]
    ranks: int = Field(ge=2)
    nodes: int = Field(ge=1)
    fabric: str = Field(min_length=3, description="links the collective crosses")
    algorithm: str = Field(default="", description="e.g. NVLS, Ring, as the source states it")
    points: tuple[CollectivePoint, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> CollectiveEntry:
        if self.nodes > self.ranks:
            raise ValueError(f"nodes ({self.nodes}) cannot exceed ranks ({self.ranks})")
        sizes = [point.message_bytes for point in self.points if point.message_bytes is not None]
        if sizes != sorted(set(sizes)):
            raise ValueError("points must have increasing, distinct message_bytes")
        return self


def _kind(value: Any) -> Any:
    """The ``kind`` of an entry, raw (a mapping) or built, to pick its model."""
    return value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)


#: One measurement; ``kind`` picks the model (a callable discriminator: the base Spec's
#: before-validator on every field rules out pydantic's field discriminator).
KernelEntry = Annotated[
    Annotated[GemmEntry, Tag("gemm")]
    | Annotated[AttentionEntry, Tag("attention")]
    | Annotated[HbmEntry, Tag("hbm")]
    | Annotated[CollectiveEntry, Tag("collective")],
    Discriminator(_kind),
]


class KernelCatalog(Spec):
    """catalog/kernels.yaml: the measurements, in no particular order."""

    entries: tuple[KernelEntry, ...] = Field(min_length=1)

    def for_chip(self, chip: str) -> tuple[KernelEntry, ...]:
        """The entries measured on one catalog chip."""
        return tuple(entry for entry in self.entries if entry.chip == chip)

    def chips(self) -> tuple[str, ...]:
        """The chips with at least one entry, in catalog-file order."""
        return tuple(dict.fromkeys(entry.chip for entry in self.entries))
