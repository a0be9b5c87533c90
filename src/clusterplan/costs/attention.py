"""Which fused-attention kernel a stack runs, and how fast each runs relative to the others.

On one chip the same causal attention runs at very different fractions of the tensor peak
depending on the library: on H100 (BF16, causal, head dimension 128, 4k-16k tokens)
FlashAttention-2 reaches 0.33 of the peak, cuDNN's fused attention 0.53 and FlashAttention-3 0.61
(Shah et al. 2024, arXiv:2407.08608, section 4.1 figures), and FlashAttention 1.x 0.43 of
FlashAttention-2's rate (Dao 2023, arXiv:2307.08691, H100 figure; ``catalog/kernels.yaml``).
Published runs used different ones (``docs/attention-kernels.md``: MLPerf v3.0 FlashAttention
1.0.5; NeMo 24.07, MLPerf v3.1 and PyTorch SDPA's flash backend FlashAttention-2; Transformer
Engine's cuDNN backend on Hopper from TE 1.2), so one fitted attention efficiency per chip
family cannot serve them all.

The model keeps the family's fitted ``Efficiency.attention`` as the rate of its *reference* kernel
and scales it for a named kernel by the ratio of the two kernels' measured rates on a chip of the
family: measured ratios, not fitted ones. The reference is the library a family's stacks select
when none is named, which ``auto`` means (:func:`reference_kernel`): cuDNN on Hopper and
Blackwell (Transformer Engine >= 1.2 prefers it on compute capability 9.0 and newer) and on
families without measurements; FlashAttention-2 on Ampere, where Transformer Engine gives
FlashAttention the preference and PyTorch SDPA's flash backend is FlashAttention-2. A kernel
without measurements beside the reference on the family (cuDNN on Ampere; FlashAttention-1 and
-3 on Blackwell; every kernel on TPU, Trainium and CDNA3) runs at the fitted rate, and answers
say so. The reference's own measured rate (:func:`reference_fraction`) is what calibration
anchors the fitted ``Efficiency.attention`` to (``validation/calibrate.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from clusterplan.specs.kernels import AttentionEntry, KernelCatalog
from clusterplan.specs.plan import ATTENTION_KERNEL_CODES

#: Plan/deployment values in code order (``PlanBatch.attention_kernel``); ``auto`` is the
#: family's reference kernel.
ATTENTION_KERNELS: tuple[str, ...] = tuple(ATTENTION_KERNEL_CODES)

#: The catalog ``implementation`` each kernel name stands for.
IMPLEMENTATIONS = {"flash1": "FlashAttention-1", "flash2": "FlashAttention-2", "cudnn": "cuDNN",
                   "flash3": "FlashAttention-3"}

#: The kernel a family's fitted ``Efficiency.attention`` is the rate of, and what ``auto`` runs:
#: cuDNN's fused attention, which Transformer Engine prefers from compute capability 9.0
#: (``get_attention_backend``: "Disabling FlashAttention to give FusedAttention preference on
#: Hopper+", transformer_engine/pytorch/attention/dot_product_attention/utils.py), except where
#: :data:`REFERENCE_KERNELS` names another.
DEFAULT_REFERENCE_KERNEL = "cudnn"
#: Families whose stacks select another library by default: on Ampere (sm80) Transformer Engine
#: keeps FlashAttention (flash-attn 2) ahead of cuDNN, as PyTorch SDPA's flash backend and
#: vLLM's FlashAttention backend do (both FlashAttention-2 there).
REFERENCE_KERNELS: dict[str, str] = {"ampere": "flash2"}


def reference_kernel(family: str) -> str:
    """The library ``auto`` means on ``family`` and whose rate its fitted attention efficiency is."""
    return REFERENCE_KERNELS.get(family, DEFAULT_REFERENCE_KERNEL)

#: Head dimension and shortest sequence of the points compared: the long-sequence plateau at
#: the head dimension the fitted efficiency is quoted at (``ATTENTION_REFERENCE_HEAD_DIM``).
RATE_HEAD_DIM = 128
RATE_MIN_SEQ = 4096

#: Backward FLOPs over forward FLOPs of fused attention (5 GEMMs against 2; Dao 2023, as the
#: FlashAttention benchmarks count them and ``training.step.FLASH_BACKWARD_FACTOR`` times them).
BACKWARD_FLOPS = 2.5

#: Which curves a ratio is taken from, most relevant first: training runs causal forward and
#: backward passes; a pair of kernels measured in several of these uses the first.
COMPARISONS: tuple[tuple[str, bool], ...] = (
    ("fwd", True), ("fwd_bwd", True), ("fwd", False), ("fwd_bwd", False), ("bwd", False))


def _plateau(entry: AttentionEntry) -> float:
    """Mean fraction of peak over the entry's points at ``RATE_MIN_SEQ`` tokens or more."""
    values = [point.fraction_of_peak for point in entry.points if point.seq_len >= RATE_MIN_SEQ]
    return float(np.mean(values)) if values else float("nan")


def kernel_rates(catalog: KernelCatalog, chips: Iterable[str],
                 reference: str = DEFAULT_REFERENCE_KERNEL) -> dict[str, float]:
    """Each named kernel's rate relative to the ``reference`` kernel's on ``chips`` (one family's
    catalog chips; :func:`reference_kernel`), from BF16/FP16 curves at head dimension 128: the ratio of the two kernels'
    mean long-sequence fractions of peak in the first comparison of :data:`COMPARISONS` that
    measured both. A kernel never measured beside the reference is rated through one that was
    (FlashAttention-1 against FlashAttention-2 in the FlashAttention-2 paper's H100 figure, then
    FlashAttention-2 against cuDNN in the FlashAttention-3 paper's). Kernels the family's chips
    have no such chain for are left out; empty when the reference itself was never measured.
    The backward pass takes the forward ratio (the FlashAttention-3 paper's backward bars give
    FlashAttention-2 0.62 and FlashAttention-3 1.08 of cuDNN at 4k-16k tokens, its causal
    forward bars 0.62 and 1.13: within 5 %)."""
    wanted = set(chips)
    plateaus: dict[tuple[str, bool], dict[str, list[float]]] = {}
    for entry in catalog.entries:
        if (isinstance(entry, AttentionEntry) and entry.chip in wanted and entry.head_dim == RATE_HEAD_DIM
                and entry.precision in ("fp16", "bf16")):
            by_kernel = plateaus.setdefault((entry.direction, entry.causal), {})
            by_kernel.setdefault(entry.implementation, []).append(_plateau(entry))
    means = {key: {name: float(np.mean(values)) for name, values in by_kernel.items()}
             for key, by_kernel in plateaus.items()}
    rates = {IMPLEMENTATIONS[reference]: 1.0}
    if not any(IMPLEMENTATIONS[reference] in curves for curves in means.values()):
        return {}
    changed = True
    while changed:  # rate each kernel from the first comparison holding it and a rated one
        changed = False
        for implementation in IMPLEMENTATIONS.values():
            if implementation in rates:
                continue
            for key in COMPARISONS:
                curves = means.get(key, {})
                known = [name for name in rates if name in curves]
                if implementation in curves and known:
                    rates[implementation] = rates[known[0]] * curves[implementation] / curves[known[0]]
                    changed = True
                    break
    return {name: round(rates[implementation], 4) for name, implementation in IMPLEMENTATIONS.items()
            if implementation in rates}


def rate_by_code(rates: dict[str, float]) -> np.ndarray:
    """Rates indexed by ``ATTENTION_KERNEL_CODES`` (``auto`` and an unmeasured family: 1.0)."""
    return np.array([1.0 if name == "auto" else rates.get(name, 1.0) for name in ATTENTION_KERNELS])


def reference_fraction(catalog: KernelCatalog, chips: Iterable[str],
                       reference: str = DEFAULT_REFERENCE_KERNEL) -> float | None:
    """The ``reference`` kernel's measured rate on ``chips`` as the step model uses it: the causal
    forward-and-backward attention FLOPs per second of one layer (backward
    :data:`BACKWARD_FLOPS` times the forward's FLOPs) as a fraction of the BF16 peak, at head
    dimension 128 and ``RATE_MIN_SEQ`` tokens or more. From the first of: the reference's own
    causal fwd+bwd curve; its causal forward and backward curves, combined by their FLOPs
    (``(1 + b) / (1/fwd + b/bwd)``); each other kernel's causal fwd+bwd curve over that kernel's
    rate (:func:`kernel_rates`), averaged. B200 (FlashAttention-4 paper): cuDNN 9.13's causal
    forward 0.53 and backward 0.46 of peak, 0.48 together. H100: only the third applies,
    FlashAttention-2's fwd+bwd 0.313 (Dao 2023) over its rate 0.622 and FlashAttention-1's 0.134
    over 0.266, both 0.50 (cuDNN's causal forward 0.534, Shah et al. 2024, times FlashAttention-2's
    fwd+bwd-over-forward ratio). A100 (reference FlashAttention-2): its own causal fwd+bwd curve,
    0.58 (Dao 2023, A100 figure). None where none of them exists.
    """
    wanted = set(chips)
    causal: dict[tuple[str, str], list[float]] = {}
    for entry in catalog.entries:
        if (isinstance(entry, AttentionEntry) and entry.chip in wanted and entry.causal
                and entry.head_dim == RATE_HEAD_DIM and entry.precision in ("fp16", "bf16")):
            causal.setdefault((entry.implementation, entry.direction), []).append(_plateau(entry))
    plateau = {key: float(np.mean(values)) for key, values in causal.items()}
    own = IMPLEMENTATIONS[reference]
    if (own, "fwd_bwd") in plateau:
        return round(plateau[(own, "fwd_bwd")], 4)
    if (own, "fwd") in plateau and (own, "bwd") in plateau:
        forward, backward = plateau[(own, "fwd")], plateau[(own, "bwd")]
        return round((1.0 + BACKWARD_FLOPS) / (1.0 / forward + BACKWARD_FLOPS / backward), 4)
    rates = kernel_rates(catalog, wanted, reference)
    through = [plateau[(implementation, "fwd_bwd")] / rates[name] for name, implementation in IMPLEMENTATIONS.items()
               if name in rates and (implementation, "fwd_bwd") in plateau]
    return round(float(np.mean(through)), 4) if through else None


def head_dim_ratios(catalog: KernelCatalog, chips: Iterable[str],
                    reference: str = DEFAULT_REFERENCE_KERNEL) -> dict[str, dict[int, float]]:
    """Each named kernel's measured long-sequence rate at other head dimensions over its rate at
    :data:`RATE_HEAD_DIM` on ``chips``: per kernel, {head dim: ratio}, 128 included at 1.0, from
    BF16/FP16 curves of one pass and masking measured at both dimensions (the first of
    :data:`COMPARISONS` that holds the pair); ``auto`` takes the ``reference`` kernel's. Kernels
    with no other head dimension measured are left out. The libraries differ: on A100 (Dao 2023,
    A100 figure, causal fwd+bwd, 4k-16k tokens) FlashAttention-2 at head dimension 64 runs at 0.90
    of its 128 rate, FlashAttention-1 at 1.16 (its tiles were sized for 64); on H100
    FlashAttention-3's causal forward at 64 and 256 runs at 0.75 and 1.05 of 128 (Shah et al.
    2024). A GEMM-like loss from the family's ``matmul_dim_half``
    (:func:`~clusterplan.costs.compute.attention_head_dim_factor`) stands in where none is measured."""
    wanted = set(chips)
    plateaus: dict[tuple[str, str, bool], dict[int, list[float]]] = {}
    for entry in catalog.entries:
        if isinstance(entry, AttentionEntry) and entry.chip in wanted and entry.precision in ("fp16", "bf16"):
            by_dim = plateaus.setdefault((entry.implementation, entry.direction, entry.causal), {})
            by_dim.setdefault(entry.head_dim, []).append(_plateau(entry))
    ratios: dict[str, dict[int, float]] = {}
    for name, implementation in IMPLEMENTATIONS.items():
        for direction, causal in COMPARISONS:
            means = {dim: float(np.mean(values))
                     for dim, values in plateaus.get((implementation, direction, causal), {}).items()}
            if RATE_HEAD_DIM in means and len(means) > 1:
                ratios[name] = {dim: round(value / means[RATE_HEAD_DIM], 4) for dim, value in sorted(means.items())}
                break
    if reference in ratios:
        ratios["auto"] = ratios[reference]
    return ratios


def measured_head_dim_ratio(ratios: dict[int, float], qk_head_dim: float, v_head_dim: float) -> float | None:
    """A kernel's measured rate at these head dimensions over its rate at 128 (``ratios`` from
    :func:`head_dim_ratios`): interpolated in log2 of the head dimension at the FLOP-weighted
    mean of the QK and V dimensions (the two GEMMs' FLOPs are proportional to them); None
    outside the measured range."""
    if not ratios:
        return None
    dims = sorted(ratios)
    mean_dim = (qk_head_dim + v_head_dim) / 2.0
    if not dims[0] <= mean_dim <= dims[-1]:
        return None
    return float(np.interp(np.log2(mean_dim), np.log2(dims), [ratios[d] for d in dims]))
