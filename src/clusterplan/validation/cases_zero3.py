"""Narayanan et al. SC'21 Table 2: ZeRO-3 without model parallelism against PTD-P.

The same two models (GPT 174.6B and 529.6B) at the same global batch trained two ways on
384-2,240 A100s: ZeRO-3 data parallelism only (DeepSpeed; the micro-batch halves as the GPUs
double, so the step stays one micro-batch per GPU) and PTD-P (tensor x pipeline x data
parallelism, Table 1 style). The paper prints achieved TFLOP/s per GPU counted with its own
formula ``96*B*s*l*h^2*(1 + s/6h + V/16lh)`` (recompute included), which converts back to the
step time exactly as :func:`clusterplan.validation.cases.megatron_sc21` does.
"""

from __future__ import annotations

from clusterplan.catalog import load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.cases import SC21_VIRTUAL_STAGES, Case, _Builder, _gpt, _rows

#: Architecture of the two Table 2 models (SC'21 Table 1 rows of the same size; seq 2048,
#: vocabulary 51,200 as in the whole paper).
SC21_TABLE2_MODELS: dict[str, tuple[int, int, int]] = {  # params (B) -> layers, hidden, heads
    "174.6": (96, 12288, 96),
    "529.6": (105, 20480, 128),
}
#: Model-parallel size as printed -> (TP, PP): TP 8 inside a DGX A100 node and the rest
#: pipeline, as every Table 1 row of that size does (530B: TP8 PP35 = 280 in Table 1).
SC21_TABLE2_MODEL_PARALLEL: dict[int, tuple[int, int]] = {96: (8, 12), 280: (8, 35)}
SEQ_LEN = 2048
VOCAB = 51200


def sc21_step_time(batch: int, layers: int, hidden: int, tflops_per_gpu: float, gpus: int,
                   seq: int = SEQ_LEN, vocab: int = VOCAB) -> float:
    """Step time from the paper's achieved TFLOP/s per GPU and its FLOP count per batch
    ``F = 96*B*s*l*h^2*(1 + s/6h + V/16lh)``: ``F / (TFLOP/s * GPUs)``."""
    flops = 96 * batch * seq * layers * hidden * hidden * (1 + seq / (6 * hidden) + vocab / (16 * layers * hidden))
    return flops / (tflops_per_gpu * 1e12 * gpus)


def megatron_sc21_table2_zero3() -> list[Case]:
    """Published step time of each Table 2 row (ZeRO-3 and PTD-P) against its own plan."""
    out = _Builder("megatron_sc21_table2_zero3")
    system = load_system("dgx-a100")
    for row in _rows("megatron_sc21_table2_zero3"):
        size = row["model_params_billion"]
        layers, hidden, heads = SC21_TABLE2_MODELS[size]
        gpus, batch = int(row["num_gpus"]), int(row["global_batch_size_seqs"])
        mb, mp = int(row["micro_batch_size"]), int(row["model_parallel_size"])
        zero3 = row["scheme"].startswith("ZeRO-3")
        step = sc21_step_time(batch, layers, hidden, float(row["achieved_tflops_per_gpu"]), gpus)
        if zero3:
            tp, pp, vp = 1, 1, 1
            label = f"GPT {size}B ZeRO-3, {gpus} GPUs (micro-batch {mb})"
            assumptions: tuple[str, ...] = (
                "ZeRO-3 (DeepSpeed) over all GPUs, no model parallelism; parameters gathered per micro-batch "
                "for forward and again for backward, gradients reduce-scattered (prefetch one unit ahead)",
                "full recompute (the paper's FLOP count includes it), no flash attention; fp16 mixed precision: "
                "16-bit gradient reduce-scatter",
            )
        elif mp in SC21_TABLE2_MODEL_PARALLEL:
            tp, pp = SC21_TABLE2_MODEL_PARALLEL[mp]
            vp = SC21_VIRTUAL_STAGES
            label = f"GPT {size}B PTD-P, {gpus} GPUs (TP{tp} PP{pp})"
            assumptions = (
                f"model-parallel size {mp} printed; TP{tp} x PP{pp} as in Table 1 (TP inside a DGX node)",
                f"micro-batch {mb} as printed; vp={vp} (chunks per stage not printed, as for Table 1)",
                "full recompute, no SP, no flash attention; 16-bit gradient all-reduce, not overlapped",
            )
        else:
            out.skip(f"GPT {size}B {row['scheme']}, {gpus} GPUs", "step_time_s", step,
                     f"model-parallel size {mp} has no Table 1 TP/PP split to take", row["source"])
            continue
        if row["notes"]:
            assumptions = (*assumptions, f"row note: {row['notes']}")

        def build(size: str = size, layers: int = layers, hidden: int = hidden, heads: int = heads,
                  tp: int = tp, pp: int = pp, vp: int = vp, gpus: int = gpus, batch: int = batch,
                  mb: int = mb, zero3: bool = zero3, row: dict[str, str] = row) -> tuple[Model, System, Plan]:
            model = _gpt(f"GPT {size}B", layers, hidden, heads, VOCAB, row["source"])
            plan = Plan(tp=tp, pp=pp, vp=vp, dp=gpus // (tp * pp), micro_batch=mb, global_batch=batch,
                        seq_len=SEQ_LEN, recompute="full", sp=False, zero=3 if zero3 else 0,
                        overlap_dp=zero3, flash_attention=False, grad_reduce="bf16", overlap_pp=False)
            return model, system, plan

        out.add(label, "step_time_s", step, build, assumptions, row["source"])
    return out.cases
