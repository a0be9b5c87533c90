"""MLPerf Training v5.0 and v5.1 Llama 3.1 pretraining (closed division): time to train -> tokens/s per chip.

Two benchmarks: ``llama31_405b`` (v5.0 on; Llama 3.1 405B with the Mixtral 8x22B tokenizer, 32,768
tokens, in place of the paper's 128,256-token one: the implementations' README, "Model details")
and ``llama31_8b`` (v5.1; Llama 3.1 8B with its own tokenizer), both at 8,192 tokens a sequence.
The table (``tables/mlperf_training_llama31.csv``) has one row per submission: each run's
``run_start`` -> ``run_stop`` time, the samples trained (the last ``eval_accuracy``'s
``samples_count``), the summed ``eval_start`` -> ``eval_stop`` time, and the plan the
submission's own ``config_*.sh`` sets, read by sourcing it with bash and taking unset variables
from the implementation's ``conf/custom.yaml`` defaults (provenance of every cell in the row's
``notes``).

The comparable metric is the training throughput of the run:

    tokens/s per chip = samples trained x 8192 / ((run time - evaluation time) x chips)

the median over the submission's runs. The two v5.0 NVIDIA GB200 submissions log no evaluation
events; there an evaluated sample costs a third of a trained one (forward only; no recompute is
configured), as in the GPT-3 table (:mod:`cases_mlperf`), which matches the logged evaluation time
of the identically configured IBM/CoreWeave GB200 runs to half a per cent of the run.

Validation only (calibrate.VALIDATION_ONLY_TABLES): no efficiency is fitted on it, so every
row's error is out of sample, a test set of NVIDIA's NeMo/Megatron-Core stack on H100, H200,
B200, B300, GB200 and GB300 that no fit has seen (why it is not fitted: docs/validation.md,
round 16).
"""

from __future__ import annotations

import statistics

from clusterplan.catalog import load_model, load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.case import ATTENTION_TEXT
from clusterplan.validation.cases import Case, _Builder, _rows
from clusterplan.validation.cases_mlperf import EVAL_COST

TABLE = "mlperf_training_llama31"
SEQ_LEN = 8192
#: The 405B benchmark's tokenizer: Mixtral 8x22B's (v3), 32,768 tokens.
MIXTRAL_VOCAB = 32768
BENCHMARK_MODELS = {"llama31_405b": "llama3-405b", "llama31_8b": "llama3-8b"}
#: Accelerator as the systems JSON names it -> catalog system. B200/B300 hosts are 8 GPUs on NVLink
#: with a 400 or 800 Gb/s NIC per GPU, as DGX B200/B300; GB200/GB300 are NVL72 racks.
SYSTEMS = {
    "NVIDIA H100-SXM5-80GB": "dgx-h100",
    "NVIDIA H200-SXM5-141GB": "dgx-h200",
    "NVIDIA Blackwell GPU (B200-SXM-180GB)": "dgx-b200",
    "NVIDIA Blackwell Ultra GPU (B300-SXM-270GB)": "dgx-b300",
    "NVIDIA Blackwell Ultra GPU (B300-SXM-288GB)": "dgx-b300",
    "NVIDIA Blackwell GPU (GB200)": "gb200-nvl72",
    "NVIDIA Blackwell Ultra GPU (GB300)": "gb300-nvl72",
}
#: Submissions whose result files are byte-identical to an earlier round's (the same runs).
REPUBLISHED = {("v5.1", "Nebius", "nebius_h200_n128"): "v5.0 Nebius nebius_soperator_8xH200_n128_ngc25.01_nemo",
               ("v5.1", "Nebius", "nebius_h200_n64"): "v5.0 Nebius nebius_soperator_8xH200_n64_ngc25.01_nemo"}


def _runs(row: dict[str, str]) -> list[tuple[float, float]]:
    """(minutes, samples trained) of each run."""
    minutes = [float(v) for v in row["run_times_min"].split(";")]
    samples = [float(v) for v in row["samples_trained_per_run"].split(";")]
    return list(zip(minutes, samples, strict=True))


def training_seconds(row: dict[str, str], minutes: float, samples: float) -> float:
    """The training part of a run: its time less the logged evaluation time, or, without
    evaluation events, less the evaluations' share at :data:`EVAL_COST` per evaluated sample."""
    if row["eval_seconds_median"]:
        return minutes * 60.0 - float(row["eval_seconds_median"])
    evaluated = float(row["n_evals_median"]) * float(row["eval_samples"]) * EVAL_COST
    return minutes * 60.0 * samples / (samples + evaluated)


def tokens_per_s_per_chip(row: dict[str, str]) -> float:
    """Median over the runs of trained tokens / (training seconds x chips)."""
    chips = int(row["n_accelerators"])
    return statistics.median(samples * SEQ_LEN / (training_seconds(row, minutes, samples) * chips)
                             for minutes, samples in _runs(row))


def _flag(text: str, name: str) -> bool:
    """A ``NAME=True`` flag in one of the table's settings texts."""
    return f"{name}=True" in text or f"{name}=1" in text


def _skip_reason(row: dict[str, str]) -> str | None:
    republished = REPUBLISHED.get((row["mlperf_round"], row["submitter"], row["system"]))
    if republished:
        return f"the same runs as {republished} (byte-identical result files)"
    if row["accelerator"] not in SYSTEMS:
        return (f"accelerator '{row['accelerator']}' ran AMD's implementation, whose parallel and "
                "optimizer-sharding settings the table does not resolve")
    if not row["fp8"] or not row["tp"] or not row["micro_batch_size"]:
        return "the configuration the logs name is not in the submission (plan not resolved)"
    if "is not in the repo" in row["notes"]:
        return ("the logs name a configuration that is not in the submission; the one there sets a "
                "different learning rate, so its plan may not be the one measured")
    return None


def mlperf_training_llama31() -> list[Case]:
    out = _Builder(TABLE)
    for row in _rows(TABLE):
        chips = int(row["n_accelerators"])
        size = row["benchmark"].removeprefix("llama31_").upper()
        label = f"{row['mlperf_round']} {row['submitter']} {row['system']} {size} ({chips} x {row['accelerator']})"
        published = tokens_per_s_per_chip(row)
        reason = _skip_reason(row)
        if reason is not None:
            out.skip(label, "tokens_per_s_per_chip", published, reason, row["source"])
            continue
        tp, pp, cp = int(row["tp"]), int(row["pp"]), int(row["cp"])
        vp = int(row["vp"]) if row["vp"] not in ("", "null") else 1
        mb, batch = int(row["micro_batch_size"]), int(row["global_batch_size_seqs"])
        fp4 = row["fp8"].startswith("FP4")
        fp8_params = (not fp4) and (_flag(row["fp8"], "FP8_PARAM_GATHER") or _flag(row["fp8"], "FP8_PARAMS"))
        sp = tp > 1 and "SP=False" not in row["other_settings"]
        overlap_tp = tp > 1 and row["tp_comm_overlap"].startswith("True")
        big = row["benchmark"] == "llama31_405b"
        runs = _runs(row)
        evals = ("the logged evaluation time" if row["eval_seconds_median"] else
                 f"{row['n_evals_median']} evaluations of {row['eval_samples']} samples at 1/3 of a trained "
                 "sample (no evaluation events logged)")
        assumptions = (
            f"tokens/s per chip = samples trained x {SEQ_LEN} / ((run time - evaluation) x {chips}); median of "
            f"{len(runs)} runs; evaluation: {evals}",
            f"TP{tp} PP{pp} CP{cp} VP{vp} micro-batch {mb}, {'fp4 (NVFP4)' if fp4 else 'fp8'} GEMMs"
            + (", fp8 parameter all-gather" if fp8_params else "")
            + f"; SP {'on' if sp else 'off'}, TP overlap {'on' if overlap_tp else 'off'}; no recompute "
            "(none configured); distributed optimizer, bf16 gradient reduction (grad_reduce_in_fp32=False), "
            "overlapped; fused cross-entropy",
            "Llama 3.1 405B with the Mixtral 8x22B tokenizer (32,768 tokens); the embedding/loss-aware "
            "pipeline split (ASYM_PP_EMBED/LOSS)" if big else "Llama 3.1 8B",
            f"attention: {ATTENTION_TEXT['cudnn']} (NeMo 25.x containers); CUDA graphs not credited",
        )

        def build(row: dict[str, str] = row, tp: int = tp, pp: int = pp, cp: int = cp, vp: int = vp,
                  mb: int = mb, batch: int = batch, chips: int = chips, fp4: bool = fp4,
                  fp8_params: bool = fp8_params, sp: bool = sp, overlap_tp: bool = overlap_tp,
                  big: bool = big) -> tuple[Model, System, Plan]:
            model = load_model(BENCHMARK_MODELS[row["benchmark"]])
            if big:
                model = model.model_copy(update={"vocab_size": MIXTRAL_VOCAB})
            system = load_system(SYSTEMS[row["accelerator"]])
            plan = Plan(tp=tp, pp=pp, vp=vp, cp=cp, dp=chips // (tp * pp * cp), micro_batch=mb,
                        global_batch=batch, seq_len=SEQ_LEN, recompute="none", sp=sp, zero=1,
                        precision="fp4" if fp4 else "fp8", fp8_params=fp8_params, grad_reduce="bf16",
                        overlap_dp=True, overlap_tp=overlap_tp, overlap_pp=True, fused_cross_entropy=True,
                        attention_kernel="cudnn").with_balanced_split(model)
            return model, system, plan

        out.add(label, "tokens_per_s_per_chip", published, build, assumptions, row["source"],
                recipe_fields=("grad_reduce", "fp8_params", "attention_kernel", "overlap_tp", "sp",
                               "fused_cross_entropy"))
    return out.cases
