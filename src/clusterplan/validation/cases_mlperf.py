"""MLPerf Training GPT-3 175B (closed division, v3.0 onwards): time to train -> tokens/s per chip.

A result is the wall time from ``run_start`` to ``run_stop`` of a run that resumes from the
benchmark checkpoint and trains until the evaluation log-perplexity reaches 2.69. It contains
no initialisation, but it does contain the evaluation pauses: after every ``ceil(24576/GBS)``
steps the run evaluates the 24,567-sequence validation subset (NVIDIA's gpt3 README,
"Evaluation frequency / thoroughness"; ``val_check_interval`` in its ``conf/custom.yaml``).
The comparable metric is the training throughput during the training part of the run:

    tokens/s per chip = trained tokens / (run time x training share x accelerators)

with the training share ``S / (S + E*V/3)`` (``S`` sequences trained, ``E`` evaluations of
``V`` sequences, an evaluated sequence costing a third of a trained one: forward only, and
these configurations do not recompute). The table's ``samples_trained_per_run`` is the MLLOG
``trained_samples`` count, which is in tokens (a multiple of GBS x 2048).
"""

from __future__ import annotations

import math
import statistics

from clusterplan.catalog import load_model, load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.case import ATTENTION_TEXT
from clusterplan.validation.cases import Case, _Builder, _rows

SEQ_LEN = 2048
EVAL_EVERY_SEQUENCES = 24576
EVAL_SEQUENCES = 24567
#: An evaluated sequence costs this fraction of a trained one (forward of forward + backward).
EVAL_COST = 1.0 / 3.0
#: Accelerator as printed -> catalog system (8 GPUs a node, 400 Gb/s NDR per GPU: DGX H100,
#: Azure ND H100 v5 and the CoreWeave/SMC HGX H100 nodes alike).
MLPERF_SYSTEMS = {
    "NVIDIA H100-SXM5-80GB": "dgx-h100",
    "NVIDIA H100-SXM-80GB": "dgx-h100",
    "NVIDIA Blackwell GPU (B200-SXM-180GB)": "dgx-b200",
    "NVIDIA Blackwell GPU (GB200)": "gb200-nvl72",
    "NVIDIA H200-SXM5-141GB": "dgx-h200",
    "TPU-v5e": "tpu-v5e",
    "TPU-v5p": "tpu-v5p",
}
#: ``INTERLEAVED_PIPELINE`` default of the v3.x NVIDIA implementation (conf/custom.yaml:
#: ``virtual_pipeline_model_parallel_size: ${oc.env:INTERLEAVED_PIPELINE,12}``), for rows
#: whose config leaves it unset.
V3_DEFAULT_VP = 12


def evaluations(trained_sequences: float, global_batch: int) -> int:
    """Evaluations in a run that trained ``trained_sequences``: one every ``ceil(24576/GBS)`` steps."""
    steps = round(trained_sequences / global_batch)
    return steps // math.ceil(EVAL_EVERY_SEQUENCES / global_batch)


def training_share(trained_sequences: float, global_batch: int) -> float:
    """Fraction of the run spent training (the rest evaluates), at EVAL_COST per evaluated sequence."""
    evaluated = evaluations(trained_sequences, global_batch) * EVAL_SEQUENCES * EVAL_COST
    return trained_sequences / (trained_sequences + evaluated)


def training_tokens_per_s_per_chip(tokens: list[float], minutes: list[float], global_batch: int,
                                   chips: int) -> float:
    """Median over the runs of trained tokens / (training part of the run x chips)."""
    rates = [t / (m * 60.0 * training_share(t / SEQ_LEN, global_batch) * chips)
             for t, m in zip(tokens, minutes, strict=True)]
    return statistics.median(rates)


#: The fused-attention library of NVIDIA's GPT-3 submissions by round (docs/attention-kernels.md:
#: v3.0 Transformer Engine 0.8 with flash-attn 1.0.5; v3.1 flash-attn 2.0.8, which TE at
#: 09ba8427 tried before its cuDNN backend; v4.0 on, TE >= 1.6 preferring cuDNN on Hopper).
#: Other vendors' rows keep ``auto`` (their chips have no attention-library measurements).
MLPERF_ATTENTION = {"v3.0": "flash1", "v3.1": "flash2"}


def mlperf_training() -> list[Case]:
    out = _Builder("mlperf_training")
    for row in _rows("mlperf_training"):
        chips, batch = int(row["n_accelerators"]), int(row["global_batch_size_seqs"])
        label = f"{row['mlperf_round']} {row['submitter']} {row['system']} ({chips} x {row['accelerator']})"
        source = row["source"]
        minutes = [float(v) for v in row["run_times_min"].split(";")]
        tokens = [float(v) for v in row["samples_trained_per_run"].split(";") if v]
        system_name = MLPERF_SYSTEMS.get(row["accelerator"])
        reasons = []
        if row["benchmark"] != "gpt3":
            reasons.append(f"{row['benchmark']} benchmark, not GPT-3 175B")
        if system_name is None:
            reasons.append(f"accelerator '{row['accelerator']}' is not in the catalog")
        if not tokens:
            reasons.append("samples trained per run not in the table: time to train does not convert to a throughput")
        if not row["tp"] or not row["pp"]:
            reasons.append("TP/PP not set in the submission's config (plan not printed)")
        published = training_tokens_per_s_per_chip(tokens, minutes, batch, chips) if tokens else math.nan
        if reasons or system_name is None:
            out.skip(label, "tokens_per_s_per_chip", published, "; ".join(reasons), source)
            continue
        tp, pp = int(row["tp"]), int(row["pp"])
        mb = int(row["micro_batch_size"] or 1)
        v3_pytorch = "implementations/pytorch" in source
        assumptions = [
            f"tokens/s per chip = trained tokens / (run time x training share x {chips}); median of the "
            f"{len(tokens)} runs",
            f"evaluation every ceil(24576/{batch}) steps on 24,567 sequences at 1/3 of a trained sequence: "
            f"training share {training_share(tokens[0] / SEQ_LEN, batch):.1%} of the run "
            f"({evaluations(tokens[0] / SEQ_LEN, batch)} evaluations)",
        ]
        if row["vp_interleave"]:
            vp = int(row["vp_interleave"])
        elif v3_pytorch:
            vp = V3_DEFAULT_VP
            assumptions.append(f"vp={vp}: INTERLEAVED_PIPELINE unset, conf/custom.yaml default")
        else:
            vp = 1
            assumptions.append("vp=1: INTERLEAVED_PIPELINE unset and this implementation's default not read")
        assumptions += [
            f"TP{tp} PP{pp} micro-batch {mb} as set; SP on, TP comm overlap on (TP_COMM_OVERLAP), P2P overlap "
            "on, FP8 (config_fp8.sh), no activation recompute (ACT_CKPT unset), dropout 0",
            "distributed optimizer with bf16 gradient reduction, overlapped (NeMo distributed_fused_adam, "
            "v4.0 conf; assumed for v3.x)",
        ]

        nvidia = row["accelerator"].startswith("NVIDIA")
        kernel = MLPERF_ATTENTION.get(row["mlperf_round"], "cudnn") if nvidia else "auto"
        if nvidia:
            assumptions.append(f"attention: {ATTENTION_TEXT[kernel]} (the round's container; "
                               "docs/attention-kernels.md)")

        def build(system_name: str = system_name, tp: int = tp, pp: int = pp, vp: int = vp, mb: int = mb,
                  batch: int = batch, chips: int = chips, kernel: str = kernel) -> tuple[Model, System, Plan]:
            model = load_model("gpt3-175b").model_copy(update={"dropout": False})
            system = load_system(system_name)
            plan = Plan(tp=tp, pp=pp, vp=vp, dp=chips // (tp * pp), micro_batch=mb, global_batch=batch,
                        seq_len=SEQ_LEN, recompute="none", sp=True, zero=1, precision="fp8",
                        grad_reduce="bf16", overlap_dp=True, overlap_tp=True, overlap_pp=True,
                        attention_kernel=kernel)
            return model, system, plan

        out.add(label, "tokens_per_s_per_chip", published, build, tuple(assumptions), source,
                recipe_fields=("grad_reduce", "overlap_tp", "attention_kernel"))
    return out.cases
