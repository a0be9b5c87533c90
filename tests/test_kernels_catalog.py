"""catalog/kernels.yaml: public kernel-level measurements load, are sourced, and agree with the
chip catalog (known chip names, fractions within 1 % of achieved / chips.yaml peak)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from clusterplan.catalog import chip_names, load_chip, load_kernels
from clusterplan.catalog.loader import check_kernel_entry, kernel_peak
from clusterplan.errors import SpecError
from clusterplan.specs.kernels import (
    AttentionEntry,
    CollectiveEntry,
    GemmEntry,
    HbmEntry,
    KernelCatalog,
)

#: Chips and kinds the public search found data for; a regression if one disappears.
EXPECTED = {
    ("a100-80gb", "gemm"), ("a100-80gb", "hbm"),
    ("h100-sxm", "gemm"), ("h100-sxm", "attention"), ("h100-sxm", "collective"),
    ("h200", "collective"),
    ("mi300x", "gemm"), ("mi300x", "hbm"), ("mi300x", "collective"),
    ("a100-40gb", "collective"),
    ("tpu-v5e", "gemm"),
    ("tpu-v5p", "collective"),
}

_SOURCE = "a public source, e.g. arXiv:0000.00000 Figure 1"


@pytest.fixture(scope="module")
def catalog() -> KernelCatalog:
    return load_kernels()


def _pairs(entry: Any) -> list[tuple[float, float]]:
    """(achieved in SI units, stated fraction) for each measured value of an entry."""
    if isinstance(entry, GemmEntry):
        return [(entry.tflops * 1e12, entry.fraction_of_peak)]
    if isinstance(entry, AttentionEntry):
        return [(p.tflops * 1e12, p.fraction_of_peak) for p in entry.points]
    if isinstance(entry, HbmEntry):
        return [(entry.gbps * 1e9, entry.fraction_of_spec)]
    return []


def test_loads(catalog: KernelCatalog) -> None:
    assert len(catalog.entries) >= 20
    assert load_kernels() is catalog  # cached


def test_every_entry_has_a_source(catalog: KernelCatalog) -> None:
    for entry in catalog.entries:
        assert len(entry.source) >= 15, entry
        assert entry.measured_with, f"{entry.chip} {entry.kind}: say what measured it"


def test_chip_names_are_catalog_names(catalog: KernelCatalog) -> None:
    known = set(chip_names())
    for entry in catalog.entries:
        assert entry.chip in known, entry.chip


def test_fractions_match_catalog_peaks(catalog: KernelCatalog) -> None:
    """Recomputed here from chips.yaml (not via the loader's check): within 1 % relative."""
    checked = 0
    for entry in catalog.entries:
        chip = load_chip(entry.chip)
        if isinstance(entry, HbmEntry):
            peak = chip.hbm_bandwidth
        elif isinstance(entry, GemmEntry | AttentionEntry):
            peak = chip.peak("bf16" if entry.precision == "fp16" else entry.precision)
        else:
            continue
        for achieved, stated in _pairs(entry):
            assert stated == pytest.approx(achieved / peak, rel=0.01), (entry.chip, entry.kind, achieved)
            assert 0 < stated <= 1.05
            checked += 1
    assert checked >= 70


def test_expected_chips_and_kinds_present(catalog: KernelCatalog) -> None:
    present = {(entry.chip, entry.kind) for entry in catalog.entries}
    assert present >= EXPECTED, f"missing: {sorted(EXPECTED - present)}"


def test_collective_curves_are_sorted_and_positive(catalog: KernelCatalog) -> None:
    curves = [e for e in catalog.entries if isinstance(e, CollectiveEntry)]
    assert curves
    for entry in curves:
        sizes = [p.message_bytes for p in entry.points if p.message_bytes is not None]
        assert sizes == sorted(sizes)
        assert all(p.busbw_gbps > 0 for p in entry.points)
    # At least one full curve (many message sizes) per single-node fabric found.
    assert any(len(e.points) >= 15 and e.nodes == 1 for e in curves)
    assert any(len(e.points) >= 15 and e.nodes >= 2 for e in curves)


def test_large_message_busbw_is_physical(catalog: KernelCatalog) -> None:
    """Large-message busbw below a loose per-chip ceiling (NVLS on H100/H200 may pass the
    450 GB/s line rate; nothing in the catalog approaches 1 TB/s)."""
    for entry in catalog.entries:
        if isinstance(entry, CollectiveEntry):
            assert max(p.busbw_gbps for p in entry.points) < 1000


def test_for_chip_and_chips(catalog: KernelCatalog) -> None:
    assert set(catalog.chips()) == {entry.chip for entry in catalog.entries}
    h100 = catalog.for_chip("h100-sxm")
    assert h100 and all(entry.chip == "h100-sxm" for entry in h100)


def test_entries_are_frozen(catalog: KernelCatalog) -> None:
    with pytest.raises(ValidationError):
        catalog.entries[0].chip = "b200"  # type: ignore[misc]


def _gemm(**overrides: Any) -> GemmEntry:
    data: dict[str, Any] = {"chip": "h100-sxm", "kind": "gemm", "precision": "bf16",
                            "shape": [8192, 8192, 8192], "tflops": 700.0,
                            "fraction_of_peak": round(700e12 / 989.4e12, 4),
                            "measured_with": "test", "source": _SOURCE}
    data.update(overrides)
    return GemmEntry.model_validate(data)


def test_check_accepts_a_consistent_entry() -> None:
    entry = _gemm()
    check_kernel_entry(0, entry)
    assert kernel_peak(entry, load_chip("h100-sxm")) == pytest.approx(989.4e12)


def test_check_refuses_unknown_chip() -> None:
    with pytest.raises(SpecError, match="not a catalog chip name"):
        check_kernel_entry(0, _gemm(chip="h100-sxmm"))


def test_check_refuses_an_alias() -> None:
    with pytest.raises(SpecError, match="not a catalog chip name"):
        check_kernel_entry(0, _gemm(chip="h100"))


def test_check_refuses_inconsistent_fraction() -> None:
    with pytest.raises(SpecError, match="catalog peak"):
        check_kernel_entry(0, _gemm(fraction_of_peak=0.80))


def test_check_refuses_fp8_on_a_chip_without_fp8() -> None:
    with pytest.raises(SpecError, match="no fp8 matmul units"):
        check_kernel_entry(0, _gemm(chip="a100-80gb", precision="fp8",
                                    fraction_of_peak=round(700e12 / 312e12, 4) / 10))


@pytest.mark.parametrize("bad", [
    {"tflops": 0.0},
    {"tflops": -1.0},
    {"fraction_of_peak": 1.2},
    {"fraction_of_peak": 0.0},
    {"source": "x"},
    {"shape": [0, 8, 8]},
    {"shape": None},
    {"tflops": True},
    {"unknown_key": 1},
])
def test_spec_refuses(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _gemm(**bad)


def test_attention_points_must_increase() -> None:
    point = {"tflops": 100.0, "fraction_of_peak": 0.1}
    with pytest.raises(ValidationError, match="increasing"):
        AttentionEntry.model_validate({
            "chip": "h100-sxm", "kind": "attention", "implementation": "FA3", "direction": "fwd",
            "causal": False, "head_dim": 128, "precision": "bf16", "source": _SOURCE,
            "points": [{"seq_len": 2048, **point}, {"seq_len": 1024, **point}]})


def test_collective_nodes_not_above_ranks() -> None:
    with pytest.raises(ValidationError, match="cannot exceed"):
        CollectiveEntry.model_validate({
            "chip": "h100-sxm", "kind": "collective", "op": "all_reduce", "ranks": 2, "nodes": 4,
            "fabric": "InfiniBand", "source": _SOURCE, "points": [{"busbw_gbps": 10.0}]})


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValidationError):
        KernelCatalog.model_validate({"entries": [{"chip": "h100-sxm", "kind": "power", "source": _SOURCE}]})


def test_the_attention_span_half_is_what_the_catalogs_causal_curves_say(catalog: KernelCatalog) -> None:
    """ATTENTION_SPAN_HALF is the mean half-rate span of the causal BF16/FP16 forward
    FlashAttention-3 curves: each refitted here as e*s/(s + s_half) (least squares in log)."""
    import numpy as np
    from scipy.optimize import least_squares

    from clusterplan.costs.compute import ATTENTION_SPAN_HALF

    halves = []
    for entry in catalog.entries:
        if (entry.kind == "attention" and entry.causal and entry.direction == "fwd"
                and entry.implementation == "FlashAttention-3" and entry.precision in ("fp16", "bf16")):
            span = np.array([p.seq_len for p in entry.points], dtype=float)
            rate = np.array([p.fraction_of_peak for p in entry.points])
            fit = least_squares(lambda x, s=span, y=rate: np.log(x[0] * s / (s + x[1]) / y), [0.6, 500.0],
                                bounds=([0.0, 0.0], [2.0, 1e5]))
            halves.append(fit.x[1])
    assert len(halves) == 3
    assert pytest.approx(float(np.mean(halves)), rel=0.05) == ATTENTION_SPAN_HALF


def test_the_attention_plateau_spans_are_the_anchors_points(catalog: KernelCatalog) -> None:
    """The span curve is normalised (costs/compute.attention_plateau_rate) over the sequence
    lengths the attention anchors average: every H100 and A100 causal head-dimension-128 curve's
    points from RATE_MIN_SEQ on. At those lengths the rate is the measurement's, on average."""
    from clusterplan.costs.attention import RATE_MIN_SEQ
    from clusterplan.costs.compute import ATTENTION_PLATEAU_SPANS, attention_plateau_rate

    for chip in ("h100-sxm", "a100-80gb"):
        spans = {float(point.seq_len) for entry in catalog.entries
                 if isinstance(entry, AttentionEntry) and entry.chip == chip and entry.causal
                 and entry.head_dim == 128 for point in entry.points if point.seq_len >= RATE_MIN_SEQ}
        assert spans == set(ATTENTION_PLATEAU_SPANS), chip
    assert float(np.mean(attention_plateau_rate(np.array(ATTENTION_PLATEAU_SPANS)))) == pytest.approx(1.0)
    assert float(attention_plateau_rate(2048.0)) == pytest.approx(0.818, abs=1e-3)
