"""Fit each chip family's kernel efficiencies on the published runs of that family.

The fitted quantities are physical (large-GEMM fraction of peak per precision, fused-attention
fraction of peak, HBM efficiency of memory-bound kernels, fixed cost per kernel) and shared by
every row of the family: there are no per-model or per-row corrections. The fit minimises the
squared log-ratio of predicted to published values plus a weak Gaussian prior on each parameter
(a maximum a posteriori fit), which keeps parameters the data barely constrain at physically
sensible values instead of letting them absorb noise. Families with no published training runs
take them from the families of the same software stack, and say so.

Each of the three stages (dense training, mixture-of-experts, serving) is fitted on the family's
own rows of that stage; a family without such rows takes one fit shared by the families of its
software stack that have them (every family's rows if none in its stack does; the priors if no
family has any). That one rule produces the shipped parameters and is what
:mod:`clusterplan.validation.crossval` re-runs with a table, or a family, left out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from clusterplan.costs.attention import reference_kernel
from clusterplan.costs.compute import Efficiency
from clusterplan.validation.case import Case, higher_is_faster
from clusterplan.validation.harness import mape, run
from clusterplan.validation.stacks import ALL_FAMILIES, RESERVED_BYTES, STACKS

#: (prior mean, prior sigma, lower, upper) per parameter.
PRIORS: dict[str, tuple[float, float, float, float]] = {
    "matmul.bf16": (0.75, 0.15, 0.30, 0.95),
    "matmul.fp8": (0.60, 0.15, 0.20, 0.95),
    "matmul.fp4": (0.50, 0.15, 0.15, 0.95),
    "attention": (0.50, 0.15, 0.15, 0.90),
    "hbm": (0.80, 0.10, 0.40, 0.95),
    "matmul_dim_half": (64.0, 64.0, 0.0, 1024.0),
    "kernel_overhead_us": (5.0, 20.0, 0.0, 200.0),
    "collective_overhead_us": (10.0, 10.0, 0.0, 200.0),
    "scale_up_collectives": (1.0, 0.15, 0.5, 1.6),
    "scale_out_collectives": (1.0, 0.15, 0.5, 1.6),
}

#: Priors of the MoE-only parameters, fitted in a second stage on the MoE rows with every dense
#: parameter held at its dense fit.
MOE_PRIORS: dict[str, tuple[float, float, float, float]] = {
    "grouped_matmul": (0.8, 0.2, 0.2, 1.0),
    "moe_layer_overhead_us": (100.0, 300.0, 0.0, 5000.0),
    # One cuBLAS GEMM launch per local expert (Transformer Engine's multi-stream grouped GEMM):
    # a few microseconds of host launch each.
    "expert_gemm_overhead_us": (5.0, 10.0, 0.0, 200.0),
}
MOE_TABLES = frozenset({"nemo_perf_moe"})

#: Priors of the serving parameters, fitted in a third stage on the family's serving rows.
INFERENCE_PRIORS: dict[str, tuple[float, float, float, float]] = {
    "inference_hbm": (0.8, 0.1, 0.3, 0.95),
    "inference_step_overhead_us": (500.0, 5000.0, 0.0, 50000.0),
    # Outside the engine: API server, tokenisation, first-token detokenisation and streaming.
    "serving_request_latency_ms": (1.0, 10.0, 0.0, 100.0),
}
INFERENCE_TABLES = frozenset({"inference_throughput", "inference_latency", "inference_server", "mlperf_inference",
                              "inference_wide_ep", "mlperf_inference_long_prompts", "neuron_trn1_serving"})

#: Validated, never fitted; their error is out of sample by construction. SC'21 Table 2's ZeRO-3
#: rows ran DeepSpeed's 2021 implementation, whose gathers reached ~1/8 of the fabric's
#: all-gather rate; MT-NLG ran DeepSpeed's pipeline engine: fitted, they would slow every A100
#: kernel of the Megatron-LM rows to absorb a framework cost the time model does not represent.
#: (The MLPerf GPT-3 rows, NVIDIA's NeMo stack, are fitted: cross-validated, fitting them took
#: the out-of-sample error of the other fitted tables from 18.8 % to 15.7 % on average;
#: docs/validation.md.)
#: LLM Foundry's MPT rows ran MosaicML Composer's PyTorch FSDP (2023 containers, no Transformer
#: Engine for bf16), another software stack than the fitted Megatron/NeMo rows: its H100 rows reach
#: 30-45 % MFU where NeMo's reach 50-60 %, a framework gap the fit must not spread over every
#: Hopper row.
#: BLOOM-176B ran Megatron-DeepSpeed (DeepSpeed's pipeline engine and BF16Optimizer, as MT-NLG) on
#: Jean Zay's Omni-Path nodes, a network no fitted row uses. PaLM's one modelled row ran Google's
#: 2022 Pathways/JAX stack with parallel attention + MLP blocks the time model costs as serial ones.
#: torchtitan's rows ran PyTorch-native FSDP2 + torch.compile + torchao float8, another stack again.
#: AXLearn's rows ran JAX/XLA SPMD on H100, TPU v5p, Trainium2 and B200 (validation/cases_axlearn.py):
#: the only public Trainium2 runs, kept out of the fit so they measure it.
#: The Megatron-Bridge recipes are memory tests with no published speed (cases_mbridge.py).
#: MLPerf Training v5.x Llama 3.1 (cases_mlperf_llama.py) is a test set: fitted, its 8B rows at
#: 16-512 GPUs (steps of 85-580 ms, 19-71 ms more than 3.2 logged forwards) pulled
#: Blackwell's per-kernel cost from 6 to 43 us and its MoE layer cost to zero, a step cost the
#: model lacks absorbed by a parameter that means something else (docs/validation.md, round 16).
#: AWS's Trainium1 serving benchmarks (Transformers NeuronX, Neuron 2.18; validation/inference_neuron.py)
#: measure how the Neuron serving fit, made on Trainium2's rows, transfers to Trainium1 and across
#: model sizes (7B to 70B): kept out of the fit until a round judges fitting them (round 22).
#: MLPerf's deepseek-r1 rows ran attention-DP, wide-EP engines the serving step does not represent;
#: its llama3.1-405b Server and Interactive rows' p99 TTFT is set by prompts up to 19,988 tokens
#: that fixed-length requests do not have (validation/inference_cases.py, MLPERF_WIDE_EP_TABLE,
#: MLPERF_LATENCY_UNFITTED).
VALIDATION_ONLY_TABLES = frozenset({"megatron_sc21_table2_zero3", "mtnlg_2022", "llmfoundry_mpt", "bloom_176b",
                                    "palm_table3", "torchtitan", "axlearn_2025", "inference_wide_ep",
                                    "mlperf_inference_long_prompts", "megatron_bridge_recipes",
                                    "mlperf_training_llama31", "neuron_trn1_serving"})

#: Software stacks (which families share fits): validation/stacks.py (STACKS, ALL_FAMILIES).

def _reserve(family: str) -> float:
    return RESERVED_BYTES[STACKS[family]]


def stage_of(case: Case) -> str:
    """Which calibration stage a case belongs to: a mixture-of-experts training row is an MoE
    row wherever it is tabled (the validation-only AXLearn table holds both kinds), so it is
    predicted with its family's MoE parameters, as `validate` predicts it."""
    if case.table in INFERENCE_TABLES:
        return "serving"
    moe_model = case.model is not None and case.model.moe is not None
    return "MoE" if case.table in MOE_TABLES or moe_model else "dense"


def usable(cases: Sequence[Case]) -> list[Case]:
    """The rows a fit can use: modelled, with a finite published value, not validation-only."""
    return [c for c in cases if c.skip is None and math.isfinite(c.published)
            and c.table not in VALIDATION_ONLY_TABLES]


@dataclass(frozen=True)
class FamilyFit:
    efficiency: Efficiency
    rows: int
    mape_before: float
    mape_after: float


@dataclass(frozen=True)
class StageSource:
    """Where one stage of a family's parameters came from."""

    stage: str
    parameters: tuple[str, ...]
    rows: int
    tables: tuple[str, ...]
    families: tuple[str, ...]  # the families whose rows were fitted (the family itself if own rows)
    mape_before: float = math.nan
    mape_after: float = math.nan
    #: parameters fitted as their realisation of a kernel-level measurement (DenseFit)
    anchored: tuple[str, ...] = ()
    #: parameters taken at their kernel-level measurement, not fitted (:data:`AT_MEASUREMENT`)
    measured: tuple[str, ...] = ()

    def own(self, family: str) -> bool:
        """Fitted on ``family``'s own rows (not taken from other families, not the priors)."""
        return self.families == (family,)

    def describe(self, family: str) -> str:
        if self.rows == 0:
            return f"{self.stage} parameters at their priors (no {self.stage} rows in any family)"
        whose = "" if self.families == (family,) else f" of {', '.join(self.families)}"
        anchored = (f"; {', '.join(self.anchored)} as realisations of kernel measurements"
                    if self.anchored else "")
        measured = f"; {', '.join(self.measured)} at the kernel measurement" if self.measured else ""
        return (f"{self.stage} stage: {len(self.parameters)} parameters on {self.rows} rows{whose} "
                f"({', '.join(self.tables)}): MAPE {self.mape_before:.1f}% at the priors -> "
                f"{self.mape_after:.1f}%{anchored}{measured}")


#: Rows a chip needs in a fit before its sustained clock is fitted (one row is a per-row factor).
SUSTAINED_MIN_ROWS = 2
#: Prior of a chip's sustained-clock ratio (its datasheet peak's share that it sustains): the
#: datasheet peaks are taken at boost clocks that power limits hold to different degrees
#: (Blackwell: 1000 W B200, 1200 W GB200, 1400 W GB300 on 148/160-SM dies), a fifth either way.
SUSTAINED_PRIOR: tuple[float, float, float, float] = (1.0, 0.20, 0.6, 1.4)
SUSTAINED = "sustained."


def case_chip(case: Case) -> str:
    """The catalog name of the chip a row runs on (its override, else its system's chip): the
    name ``Hardware`` looks its sustained clock up by."""
    from clusterplan.catalog import load_chip

    if case.chip is not None:
        return case.chip.name
    return load_chip(case.system.chip).name if case.system is not None else ""


def sustained_chips(cases: Sequence[Case]) -> list[str]:
    """The chips whose sustained clock a fit on ``cases`` frees: in a family where at least two
    chips have :data:`SUSTAINED_MIN_ROWS` rows, each of those chips (a family of one chip has
    nothing to tell its clock from its kernel efficiencies). Each ratio has the prior
    :data:`SUSTAINED_PRIOR`; the family's efficiencies are then per sustained clock."""
    by_family: dict[str, Counter[str]] = {}
    for case in cases:
        by_family.setdefault(case.family, Counter())[case_chip(case)] += 1
    freed: list[str] = []
    for counts in by_family.values():
        enough = [chip for chip, rows in counts.items() if rows >= SUSTAINED_MIN_ROWS]
        if len(enough) >= 2:
            freed += enough
    return sorted(freed)


def _names(cases: Sequence[Case]) -> list[str]:
    precisions = {case.plan.precision for case in cases if case.plan is not None}
    names = ["matmul.bf16"] + [f"matmul.{p}" for p in ("fp8", "fp4") if p in precisions]
    return [*names, "attention", "hbm", "matmul_dim_half", "kernel_overhead_us", "collective_overhead_us",
            "scale_up_collectives", "scale_out_collectives", *(SUSTAINED + c for c in sustained_chips(cases))]


def _prior(name: str) -> tuple[float, float, float, float]:
    return SUSTAINED_PRIOR if name.startswith(SUSTAINED) else PRIORS[name]


def _efficiency(family: str, names: list[str], values: np.ndarray, tables: list[str],
                note: str = "") -> Efficiency:
    params = dict(zip(names, values, strict=True))
    matmul = {key.split(".")[1]: round(float(v), 4) for key, v in params.items() if key.startswith("matmul.")}
    return Efficiency(
        family=family, matmul=matmul, attention=round(float(params["attention"]), 4),
        hbm=round(float(params["hbm"]), 4),
        matmul_dim_half=round(float(params["matmul_dim_half"]), 1),
        kernel_overhead_s=round(float(params["kernel_overhead_us"]) * 1e-6, 9),
        collective_overhead_s=round(float(params["collective_overhead_us"]) * 1e-6, 9),
        scale_up_collectives=round(float(params["scale_up_collectives"]), 4),
        scale_out_collectives=round(float(params["scale_out_collectives"]), 4),
        sustained_clock={key.removeprefix(SUSTAINED): round(float(v), 4) for key, v in params.items()
                         if key.startswith(SUSTAINED) and _chip_family(key.removeprefix(SUSTAINED)) == family},
        reserved_bytes=_reserve(family), fitted_on=tables, note=note,
    )


def _chip_family(name: str) -> str:
    from clusterplan.catalog import load_chip

    return load_chip(name).family


def _signed_log_ratio(cases: Sequence[Case], predicted: np.ndarray) -> np.ndarray:
    """log(predicted / published), signed so that "too fast" has one sign for rates and times."""
    published = np.array([c.published for c in cases])
    rates = np.array([higher_is_faster(c.metric) for c in cases])
    log_ratio = np.log(predicted / published)
    return np.asarray(np.where(rates, -log_ratio, log_ratio), dtype=float)


#: Relative finite-difference step of the fits. Analytical stages (dense, MoE) are smooth in
#: their parameters. The serving stage's rows are replayed through the request-level simulator,
#: whose outputs move in steps as admissions and batch compositions change: a 0.1 % difference
#: quotient measures those steps, not the slope, and the fit stopped next to its priors (Hopper's
#: objective at its round-6 fit 1.21, at the optimum a 3 % step finds 1.06; docs/validation.md,
#: round 7).
DIFF_STEP = {"dense": 1e-3, "MoE": 1e-3, "serving": 3e-2}


def _least_squares(residuals: Callable[[np.ndarray], np.ndarray], start: np.ndarray, lower: np.ndarray,
                   upper: np.ndarray, diff_step: float = DIFF_STEP["dense"]) -> np.ndarray:
    # A robust (soft-L1) loss: published tables hold a few rows from immature software stacks
    # that should not drag the physical parameters of the rest.
    solution = least_squares(residuals, start, bounds=(lower, upper), diff_step=diff_step, x_scale="jac",
                             loss="soft_l1", f_scale=0.1)
    return np.asarray(solution.x)


#: Parameters a sourced kernel-level measurement can anchor (catalog/kernels.yaml): the large-GEMM
#: fraction of peak per precision, the fused-attention fraction, the HBM fraction, and the fixed
#: cost of a kernel (the time of a GEMM too small to use the tensor units, :data:`LAUNCH_BOUND`).
ANCHORABLE = frozenset({"matmul.bf16", "matmul.fp8", "matmul.fp4", "attention", "hbm", "kernel_overhead_us"})
#: The anchored parameters that are fractions of a peak, capped at :data:`ANCHORED_CEILING`.
FRACTIONS = ANCHORABLE - {"kernel_overhead_us"}
#: A GEMM that reaches less than this fraction of the dense peak measures the kernel's fixed cost:
#: its arithmetic at the peak takes at most this share of its time, the rest is launch, setup and
#: tail (the XLA tables' 512^3 bf16 GEMM on H100 at 0.041, 6.6 us; 256^3 on B200 at 0.003, 5.0 us).
LAUNCH_BOUND = 0.05
#: Prior of an anchored parameter's *realisation* r = end-to-end value / kernel measurement: a
#: framework realises about what its kernels reach in isolation, give or take shapes and fusion.
REALISATION_PRIOR: tuple[float, float, float, float] = (1.0, 0.15, 0.3, 1.3)
#: Largest value an anchored parameter may take after multiplying (a fraction of peak).
ANCHORED_CEILING = 0.99
#: Anchored parameters taken at their kernel measurement (realisation 1), not fitted, wherever a
#: fit's donors measure them. Attention: the published rows cannot tell its rate from the rest of
#: a layer's time. Fitted as a realisation, Hopper's came out at 0.75 of the measured 0.50 (round
#: 18), because mid-length rows (2k-8k tokens, attention 10-30 % of a layer) ran slower than the
#: model for reasons of their own; the rows where attention is most of the time said otherwise
#: (Megatron MoE Model Zoo's 16k-131k-token Qwen3 rows, which the MoE stage cannot move it for:
#: -9 to -25 %; LLM Foundry's 8k-64k-token rows, validation only). The measurement decides
#: (docs/validation.md, round 19). GEMM realisations stay fitted: every fit has rows that GEMMs
#: dominate.
AT_MEASUREMENT = frozenset({"attention"})

Anchors = Mapping[str, Mapping[str, float]]  # family -> parameter -> measured fraction
BF16_GEMM = "matmul.bf16"


def kernel_anchors() -> dict[str, dict[str, float]]:
    """Per family, the parameters catalog/kernels.yaml measures (docs/kernels.md).

    ``matmul.<precision>`` is the best GEMM of any of the family's chips at that precision
    (fp16 counts as bf16: the same tensor peak), the large-GEMM asymptote the parameter means;
    ``hbm`` the best streaming bandwidth fraction; ``kernel_overhead_us`` the shortest time of a
    GEMM below :data:`LAUNCH_BOUND` of the peak, in microseconds (the fixed cost a kernel pays
    whatever its size; round 18); ``attention`` the reference attention
    kernel's causal forward-and-backward fraction of the BF16 peak
    (:func:`clusterplan.costs.attention.reference_fraction`). Attention is anchored since every
    published row names its attention library (``Plan.attention_kernel``, round 12) and the
    libraries' measured ratios put each row on the reference kernel's scale: before that, which
    of curves 1.5x apart a row ran was unknown.
    """
    from clusterplan.catalog import load_chip, load_kernels
    from clusterplan.catalog.loader import chip_names, family_chips
    from clusterplan.costs.attention import reference_fraction

    anchors: dict[str, dict[str, float]] = {}
    for family in sorted({load_chip(chip).family for chip in chip_names()}):
        measured = reference_fraction(load_kernels(), family_chips(family), reference_kernel(family))
        if measured is not None:
            anchors.setdefault(family, {})["attention"] = measured
    for entry in load_kernels().entries:
        family = load_chip(entry.chip).family
        if entry.kind == "gemm" and entry.shape is not None and entry.fraction_of_peak < LAUNCH_BOUND:
            m, n, k = entry.shape
            seconds = 2.0 * entry.batch * m * n * k / (entry.tflops * 1e12)
            known = anchors.setdefault(family, {})
            known["kernel_overhead_us"] = min(known.get("kernel_overhead_us", math.inf), seconds * 1e6)
            continue
        if entry.kind == "gemm":
            name, value = f"matmul.{'bf16' if entry.precision == 'fp16' else entry.precision}", entry.fraction_of_peak
        elif entry.kind == "hbm":
            name, value = "hbm", entry.fraction_of_spec
        else:
            continue
        known = anchors.setdefault(family, {})
        known[name] = max(known.get(name, 0.0), float(value))
    return anchors


@dataclass(frozen=True)
class DenseFit:
    """One dense fit: the parameter values shared by its rows, and how they become a family's
    efficiencies. An *anchored* parameter is fitted as its realisation r (end-to-end value over
    the family's sourced kernel-level measurement, :data:`REALISATION_PRIOR`), so a family that
    borrows the fit gets its own measurement times the donors' r; every other parameter is
    fitted, and borrowed, as is."""

    names: tuple[str, ...]
    values: tuple[float, ...]
    anchored: frozenset[str]
    anchors: Anchors
    tables: tuple[str, ...]
    donors: tuple[str, ...]

    def efficiency(self, family: str) -> Efficiency:
        values = []
        for name, value in zip(self.names, self.values, strict=True):
            if name in self.anchored:
                value = self.measured(family, name) * value
                value = min(value, ANCHORED_CEILING) if name in FRACTIONS else value
            values.append(value)
        return _efficiency(family, list(self.names), np.array(values), list(self.tables))

    def measured(self, family: str, name: str) -> float:
        """The kernel fraction ``family`` realises for anchored parameter ``name``: its own
        measurement; else, for a low-precision GEMM of a family whose bf16 GEMM is measured, that
        measurement times the measured donors' ratio of the two (a chip that reaches half its bf16
        peak is not taken to reach the donors' fraction of its fp8 peak: MI300X's bf16 GEMM
        measures 0.60 of peak against H100's 0.80, and its fp8 one would otherwise be read as
        H100's 0.71); else the measured donors' mean. Attention fractions are of each family's
        reference library (``costs/attention.reference_kernel``), so the mean takes only donors
        with the same reference where one is measured (A100's FlashAttention-2 0.58 is not a
        cuDNN fraction)."""
        own = self.anchors.get(family, {})
        if name in own:
            return own[name]
        measured = [d for d in self.donors if name in self.anchors.get(d, {})]
        if name == "attention":
            alike = [d for d in measured if reference_kernel(d) == reference_kernel(family)]
            measured = alike or measured
        donors = [self.anchors[d] for d in measured]
        donor_mean = float(np.mean([d[name] for d in donors]))
        paired = [d for d in donors if BF16_GEMM in d]
        if name.startswith("matmul.") and name != BF16_GEMM and BF16_GEMM in own and paired:
            ratio = float(np.mean([d[name] / d[BF16_GEMM] for d in paired]))
            return own[BF16_GEMM] * ratio
        return donor_mean


def anchored_names(names: Sequence[str], families: Sequence[str], anchors: Anchors) -> frozenset[str]:
    """The parameters some of ``families`` (the fit's donors) have a kernel-level measurement of;
    a donor without one is taken to reach the measured donors' mean kernel fraction."""
    return frozenset(n for n in names if n in ANCHORABLE and any(n in anchors.get(f, {}) for f in families))


def fit_dense(family: str, rows: Sequence[Case], anchors: Anchors | None = None) -> tuple[Efficiency, StageSource]:
    """MAP fit of the dense-training parameters on ``rows`` (one shared set, whatever families
    the rows come from); labelled as ``family``. ``anchors`` default to the catalog's kernel
    measurements, as :class:`Calibration` uses them."""
    fit, source = fit_dense_shared(rows, kernel_anchors() if anchors is None else anchors)
    return fit.efficiency(family), source


def fit_dense_shared(rows: Sequence[Case], anchors: Anchors) -> tuple[DenseFit, StageSource]:
    """The dense fit on ``rows`` as a :class:`DenseFit` (see there for anchored parameters)."""
    names = _names(rows)
    tables = sorted({c.table for c in rows})
    families = tuple(sorted({c.family for c in rows}))
    anchored = anchored_names(names, families, anchors)
    # Parameters at their measurement keep realisation 1 (the prior's mean) and are not fitted.
    measured = anchored & AT_MEASUREMENT
    prior = {n: REALISATION_PRIOR if n in anchored else _prior(n) for n in names}
    start = np.array([prior[n][0] for n in names])
    free = np.array([n not in measured for n in names])
    fitted = tuple(n for n in names if n not in measured)

    def shared(values: np.ndarray) -> DenseFit:
        return DenseFit(tuple(names), tuple(float(v) for v in values), anchored, anchors, tuple(tables),
                        families)

    def full(free_values: np.ndarray) -> np.ndarray:
        values = start.copy()
        values[free] = free_values
        return values

    if not rows:
        return shared(start), StageSource("dense", fitted, 0, (), (), measured=tuple(sorted(measured)))
    lower = np.array([prior[n][2] for n in fitted])
    upper = np.array([prior[n][3] for n in fitted])
    sigma = np.array([prior[n][1] for n in fitted])
    prior_weight = 1.0 / math.sqrt(len(rows))

    def lookup(values: np.ndarray) -> Callable[[str], Efficiency]:
        fit = shared(values)
        by_family = {f: fit.efficiency(f) for f in families}
        return by_family.__getitem__

    def residuals(free_values: np.ndarray) -> np.ndarray:
        predicted = np.array([r.predicted for r in run(rows, lookup(full(free_values)))], dtype=float)
        return np.concatenate([_signed_log_ratio(rows, predicted),
                               prior_weight * (free_values - start[free]) / sigma])

    before = mape(run(rows, lookup(start)))
    values = full(_least_squares(residuals, start[free], lower, upper))
    after = mape(run(rows, lookup(values)))
    source = StageSource("dense", fitted, len(rows), tuple(tables), families, before, after,
                         tuple(sorted(anchored - measured)), tuple(sorted(measured)))
    return shared(values), source


#: Efficiency field, scale and rounding of each staged prior (microsecond priors are stored in seconds).
STAGE_FIELDS = {"grouped_matmul": ("grouped_matmul", 1.0, 4),
                "moe_layer_overhead_us": ("moe_layer_overhead_s", 1e-6, 9),
                "expert_gemm_overhead_us": ("expert_gemm_overhead_s", 1e-6, 9),
                "inference_hbm": ("inference_hbm", 1.0, 4),
                "inference_step_overhead_us": ("inference_step_overhead_s", 1e-6, 9),
                "serving_request_latency_ms": ("serving_request_latency_s", 1e-3, 6)}


def _with_stage(base: Efficiency, names: Sequence[str], values: np.ndarray) -> Efficiency:
    update: dict[str, object] = {}
    for name, value in zip(names, values, strict=True):
        field_name, scale, digits = STAGE_FIELDS[name]
        update[field_name] = round(float(value) * scale, digits)
    return base.model_copy(update=update)


def fit_stage(bases: dict[str, Efficiency], priors: dict[str, tuple[float, float, float, float]],
              rows: Sequence[Case], stage: str) -> tuple[dict[str, float], StageSource]:
    """MAP fit of ``priors``' parameters, shared by ``rows``, each row predicted with its own
    family's ``bases`` entry (every other parameter fixed there). Returns the fitted values
    (in the priors' units) and where they came from; without rows the priors stand."""
    names = list(priors)
    start = np.array([priors[n][0] for n in names])
    if not rows:
        return dict(zip(names, start.tolist(), strict=True)), StageSource(stage, tuple(names), 0, (), ())
    lower = np.array([priors[n][2] for n in names])
    upper = np.array([priors[n][3] for n in names])
    sigma = np.array([priors[n][1] for n in names])
    prior_weight = 1.0 / math.sqrt(len(rows))

    def lookup(values: np.ndarray) -> Callable[[str], Efficiency]:
        staged = {family: _with_stage(base, names, values) for family, base in bases.items()}
        return staged.__getitem__

    def residuals(values: np.ndarray) -> np.ndarray:
        predicted = np.array([r.predicted for r in run(rows, lookup(values))], dtype=float)
        return np.concatenate([_signed_log_ratio(rows, predicted), prior_weight * (values - start) / sigma])

    before = mape(run(rows, lookup(start)))
    values = _least_squares(residuals, start, lower, upper, DIFF_STEP[stage])
    after = mape(run(rows, lookup(values)))
    source = StageSource(stage, tuple(names), len(rows), tuple(sorted({c.table for c in rows})),
                         tuple(sorted({c.family for c in rows})), before, after)
    return dict(zip(names, values.tolist(), strict=True)), source


@dataclass
class Calibration:
    """The calibration procedure over one set of published rows, evaluated lazily per family
    (cross-validation asks for a few families of many refits; ``calibrate`` for all of them).

    Stage rule: a family's own rows of the stage; else the rows of the other families of its
    software stack (:data:`STACKS`), fitted as one shared set; else every family's rows of that
    stage; else the priors. Later stages hold the earlier stages' parameters of each row's own
    family fixed.
    """

    cases: Sequence[Case]
    #: sourced kernel-level measurements per family (catalog/kernels.yaml; empty: every parameter free)
    anchors: Anchors = field(default_factory=kernel_anchors)
    _rows: dict[tuple[str, str], list[Case]] = field(default_factory=dict, init=False)
    _dense: dict[str, tuple[Efficiency, StageSource]] = field(default_factory=dict, init=False)
    _pooled_dense: dict[tuple[str, ...], tuple[DenseFit, StageSource]] = field(default_factory=dict, init=False)
    _staged: dict[tuple[str, str], tuple[Efficiency, StageSource]] = field(default_factory=dict, init=False)
    _pooled_stage: dict[tuple[str, tuple[str, ...]], tuple[dict[str, float], StageSource]] = field(
        default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for case in usable(self.cases):
            self._rows.setdefault((stage_of(case), case.family), []).append(case)

    def rows(self, stage: str, family: str) -> list[Case]:
        return self._rows.get((stage, family), [])

    def donors(self, stage: str, family: str) -> tuple[str, ...]:
        """The families whose rows fit ``stage`` for ``family`` (see the class docstring)."""
        if self.rows(stage, family):
            return (family,)
        with_rows = [f for (s, f) in self._rows if s == stage]
        same_stack = tuple(sorted(f for f in with_rows if STACKS[f] == STACKS[family]))
        return same_stack or tuple(sorted(with_rows))

    def dense(self, family: str) -> tuple[Efficiency, StageSource]:
        if family not in self._dense:
            donors = self.donors("dense", family)
            if donors not in self._pooled_dense:
                rows = [c for f in donors for c in self.rows("dense", f)]
                self._pooled_dense[donors] = fit_dense_shared(rows, self.anchors)
            fit, source = self._pooled_dense[donors]
            eff = fit.efficiency(family).model_copy(update={"reserved_bytes": _reserve(family)})
            self._dense[family] = (eff, source)
        return self._dense[family]

    def _stage_base(self, stage: str, family: str) -> Efficiency:
        return self.dense(family)[0] if stage == "MoE" else self.staged("MoE", family)[0]

    def staged(self, stage: str, family: str) -> tuple[Efficiency, StageSource]:
        """The family's parameters through ``stage`` ("MoE", then "serving")."""
        key = (stage, family)
        if key not in self._staged:
            priors = MOE_PRIORS if stage == "MoE" else INFERENCE_PRIORS
            donors = self.donors(stage, family)
            if (stage, donors) not in self._pooled_stage:
                rows = [c for f in donors for c in self.rows(stage, f)]
                bases = {f: self._stage_base(stage, f) for f in donors}
                self._pooled_stage[(stage, donors)] = fit_stage(bases, priors, rows, stage)
            values, source = self._pooled_stage[(stage, donors)]
            base = self._stage_base(stage, family)
            self._staged[key] = (_with_stage(base, list(priors), np.array(list(values.values()))), source)
        return self._staged[key]

    def sources(self, family: str) -> tuple[StageSource, ...]:
        return (self.dense(family)[1], self.staged("MoE", family)[1], self.staged("serving", family)[1])

    def efficiency(self, family: str) -> Efficiency:
        """All three stages, with ``fitted_on`` and a note that say where each came from."""
        eff = self.staged("serving", family)[0]
        sources = self.sources(family)
        tables = sorted({t for s in sources for t in s.tables})
        note = "; ".join(s.describe(family) for s in sources)
        return eff.model_copy(update={"fitted_on": tables, "note": note})

    def parameters(self, family: str) -> int:
        """Free parameters fitted on this family's own rows (shared stack fits not counted)."""
        return sum(len(s.parameters) for s in self.sources(family) if s.own(family))


def fit_family(family: str, cases: Sequence[Case]) -> FamilyFit:
    """Every stage of one family, fitted on its own rows in ``cases``."""
    calibration = Calibration([c for c in cases if c.family == family])
    dense = calibration.dense(family)[1]
    rows = sum(s.rows for s in calibration.sources(family))
    return FamilyFit(calibration.efficiency(family), rows, dense.mape_before, dense.mape_after)


def calibrate(cases: Sequence[Case]) -> Calibration:
    """The calibration of every family on ``cases`` (evaluate it with ``efficiency_yaml``)."""
    return Calibration(cases)


def efficiency_yaml(calibration: Calibration) -> dict[str, object]:
    """The ``catalog/efficiency.yaml`` document for a calibration."""
    return {"families": [calibration.efficiency(f).model_dump(mode="json") for f in ALL_FAMILIES]}
