"""BLOOM-176B on Jean Zay (BigScience tr11-176B-ml): iteration times of the training run.

BigScience's training README prints Megatron-DeepSpeed log lines (elapsed time per iteration, with
the hardware TFLOP/s the code derives from it) for the run's 384 A100 80GB GPUs at TP4 x PP12 x DP8.
Three are comparable: the full-batch rate at the end of epoch one (GBS 2048, MBS 2), the
pre-launch measurement at the first ramp-up batch (GBS 16, MBS 2: one micro-batch per pipeline),
and the rounded rate the run started at (GBS 192, MBS 1; converted back with the code's formula).

Jean Zay's A100 nodes are not DGX A100s: each 8-GPU node has 4 Omni-Path links (BigScience README,
'Hardware'), and Jean Zay's Omni-Path network runs at 100 Gb/s per link (IDRIS; Intel OPA 100
series), i.e. 400 Gb/s per node = 50 Gb/s per GPU, a quarter of the DGX A100's 200 Gb/s.
:func:`jean_zay_a100` builds that system from the catalog DGX A100 with its scale-out tier cut to
the OPA rate; it is a validation view, not a catalog entry (the catalog's systems carry prices).
"""

from __future__ import annotations

import math

from clusterplan.catalog import load_model, load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.cases import Case, _Builder, _rows
from clusterplan.validation.cases_zero3 import sc21_step_time

#: Omni-Path links per node and their rate: "8 GPUs per node ... 4 OmniPath links", "Inter-node
#: connect: Omni-Path Architecture (OPA)" (bigscience train/tr11-176B-ml/README.md, Hardware);
#: "réseau Intel Omni-Path 100 Gb/s" (IDRIS description of Jean Zay, LMI MAG March 2020).
OPA_LINKS_PER_NODE = 4
OPA_LINK_BITS_PER_S = 100e9
#: Megatron-DeepSpeed's pipeline partition 'type:transformer|embedding' balances the 70 transformer
#: layers and the two embedding layers (input, tied output) over 12 stages: 6 a stage, so the first
#: and the last stage hold 5 transformer layers and the 10 others 6 (5 + 60 + 5 = 70).
BLOOM_EDGE_STAGE_LAYERS = 5
BLOOM_VOCAB = 250880


def jean_zay_a100() -> System:
    """DGX A100 (8 x A100 80GB, NVLink 3 switch) with 4 x 100 Gb/s Omni-Path per node."""
    system = load_system("dgx-a100")
    per_gpu = OPA_LINKS_PER_NODE * OPA_LINK_BITS_PER_S / 8 / system.chips_per_node  # bytes/s
    scale_up, scale_out = system.tiers[0], system.tiers[-1]
    opa = scale_out.model_copy(update={
        "name": "omni-path-100", "bandwidth": per_gpu,
        "source": "4 Omni-Path 100 Gb/s links per 8-GPU node (BigScience tr11 README; IDRIS) = 50 Gb/s per "
                  "GPU; efficiency, latency and a non-blocking fabric kept from the DGX A100's InfiniBand "
                  "tier (assumptions)"})
    view = system.model_copy(update={"name": "jean-zay-a100", "aliases": (), "tiers": (scale_up, opa),
                                     "notes": "validation view: Jean Zay gpu_p5 A100 80GB nodes (BLOOM-176B)"})
    return System.model_validate(view.model_dump())


def bloom_176b() -> list[Case]:
    out = _Builder("bloom_176b")
    system = jean_zay_a100()
    model = load_model("bloom-176b")
    for row in _rows("bloom_176b"):
        gpus, tp, pp = int(row["num_gpus"]), int(row["tensor_parallel"]), int(row["pipeline_parallel"])
        dp, mb = int(row["data_parallel"]), int(row["micro_batch_size"])
        batch, seq = int(row["global_batch_size_seqs"]), int(row["seq_len_tokens"])
        tflops = float(row["tflops_per_gpu_printed"])
        assumptions = [
            "DeepSpeed pipeline engine: non-interleaved 1F1B, DP gradient all-reduce after the flush "
            "(not overlapped), fp32 gradients (BF16Optimizer accumulates and reduces in fp32)",
            "full activation checkpointing (--checkpoint-activations), no SP, no flash attention "
            "(2022 Megatron fused softmax), ZeRO-1",
            f"{BLOOM_EDGE_STAGE_LAYERS} transformer layers on the first and last stage (the embeddings "
            "count as layers in the partition), 6 on the others",
            "Jean Zay: 4 x 100 Gb/s Omni-Path per node (50 Gb/s per GPU), NVLink 3 switch in the node",
        ]
        if row["iteration_time_s"]:
            published = float(row["iteration_time_s"])
        else:
            published = sc21_step_time(batch, model.layers, model.hidden_size, tflops, gpus, seq, BLOOM_VOCAB)
            assumptions.append(f"iteration time derived from the rounded {tflops:g} TFLOP/s of the text")
        label = f"BLOOM 176B, {gpus} A100 (TP{tp} PP{pp} DP{dp}), GBS {batch} MBS {mb}"
        if not math.isfinite(published):
            out.skip(label, "step_time_s", published, "no iteration time or TFLOP/s printed", row["source"])
            continue

        def build(tp: int = tp, pp: int = pp, dp: int = dp, mb: int = mb, batch: int = batch,
                  seq: int = seq) -> tuple[Model, System, Plan]:
            plan = Plan(tp=tp, pp=pp, vp=1, dp=dp, micro_batch=mb, global_batch=batch, seq_len=seq,
                        recompute="full", sp=False, zero=1, overlap_dp=False, overlap_pp=False,
                        flash_attention=False, grad_reduce="fp32",
                        first_stage_layers=BLOOM_EDGE_STAGE_LAYERS, last_stage_layers=BLOOM_EDGE_STAGE_LAYERS)
            return model, system, plan

        out.add(label, "step_time_s", published, build, tuple(assumptions), row["source"])
    return out.cases
