"""Megatron-Turing NLG 530B (Smith et al. 2022, section 2.4): iteration time of the training
stack on 280, 350 and 420 DGX A100 servers at batch 1,920, TP8 x PP35 x DP as printed.

The paper prints the iteration time itself, so no FLOP-count conversion is needed; its
TFLOP/s per GPU (hardware FLOPs) are kept in the table for reference.
"""

from __future__ import annotations

from clusterplan.catalog import load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.cases import Case, _Builder, _gpt, _rows


def mtnlg_2022() -> list[Case]:
    out = _Builder("mtnlg_2022")
    system = load_system("dgx-a100")
    for row in _rows("mtnlg_2022"):
        gpus, tp, pp = int(row["num_gpus"]), int(row["tensor_parallel"]), int(row["pipeline_parallel"])
        batch, seq = int(row["global_batch_size_seqs"]), int(row["seq_len_tokens"])

        def build(row: dict[str, str] = row, gpus: int = gpus, tp: int = tp, pp: int = pp, batch: int = batch,
                  seq: int = seq) -> tuple[Model, System, Plan]:
            model = _gpt(row["model"], int(row["num_layers"]), int(row["hidden_size"]), int(row["attention_heads"]),
                         int(row["vocab_size"]), row["source"])
            plan = Plan(tp=tp, pp=pp, vp=1, dp=gpus // (tp * pp), micro_batch=1, global_batch=batch, seq_len=seq,
                        recompute="full", sp=False, zero=1, overlap_dp=False, flash_attention=False,
                        grad_reduce="bf16", overlap_pp=False)
            return model, system, plan

        out.add(f"{row['model']}, {row['dgx_a100_nodes']} DGX A100 (TP{tp} PP{pp} DP{gpus // (tp * pp)})",
                "step_time_s", float(row["iteration_time_s"]), build,
                ("micro-batch 1 and the non-interleaved 1F1B schedule of DeepSpeed's pipeline engine (not printed)",
                 "full activation checkpointing, no SP, no flash attention (2021 stack)",
                 "16-bit gradients; ZeRO-1 optimizer sharding over DP; DP reduction after the pipeline "
                 "flush, not overlapped (DeepSpeed pipeline engine)",
                 "vocabulary 50,257 padded to 51,200 (not printed)"),
                row["source"])
    return out.cases
