"""AXLearn's training benchmarks (Apple, arXiv:2507.05411 v3, MLSys 2026 Industry Track, Table 3):
one JAX/XLA framework on H100, TPU v5p, Trainium2 and B200, iteration time per step.

The table prints model, hardware, iteration time, MFU and tokens/s; the configuration each run
used is AXLearn's own mesh rule for that hardware (``axlearn/experiments/text/gpt/fuji.py`` and
``qwen.py`` at 34aed43c, unchanged since before v3), read row by row into the CSV: the FSDP group
(``mesh(fsdp=N, data=-1)``: ZeRO-3 over ``dp_shard`` chips, replicated across the rest), no
pipeline, no gradient accumulation (the per-chip micro-batch is the global batch over the chips),
the remat policy mapped to the nearest recompute setting, bf16 compute with fp32 parameters and
gradient reduction. Tokens per step (throughput x iteration time) equal the configs' 4 Mi tokens
for the Llama rows and 16 Mi for Qwen3 in every row. The columns ``mesh_rule`` and
``remat_as_configured`` hold what each rule says; ``notes`` what the estimate cannot express.

These are the only public Trainium2 training runs found (docs/validation.md), and a software
stack (XLA SPMD on GPUs, TPUs and Neuron) no fitted table uses: validation only, like the other
framework tables, so the fit does not spread a framework's gap over a chip family's rows.
"""

from __future__ import annotations

from clusterplan.catalog import load_model, load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.case import Case, _Builder, _rows

#: Plan settings the paper does not print (the repository's mesh rules give them): at the CLI's
#: defaults a user meets the recompute `train` chooses and 16-bit gradient reduction.
AXLEARN_RECIPE_FIELDS = ("recompute", "recompute_modules", "offload_qkv", "grad_reduce")


def axlearn_2025() -> list[Case]:
    out = _Builder("axlearn_2025")
    for row in _rows("axlearn_2025"):
        chips = int(row["chips"])
        label = f"{row['model_as_printed']} on {row['hardware_as_printed']} ({chips:,} chips)"
        published = float(row["iteration_time_s"])
        batch, seq, micro = int(row["global_batch_seqs"]), int(row["seq_len"]), int(row["micro_batch"])
        shard = int(row["dp_shard"])
        modules = tuple(m for m in row["recompute_modules"].split(";") if m)
        offload_qkv = row["offload_qkv"] == "yes"
        replicas = chips // shard
        recompute_text = ("full recompute, Q/K/V projections kept" if offload_qkv
                          else f"{row['recompute']} recompute of {', '.join(modules)}")
        assumptions = (
            f"ZeRO-3 over {shard:,} chips" + (f", {replicas:,} replicas" if replicas > 1 else "")
            + f", TP1, PP1, micro-batch {micro}, no gradient accumulation (mesh rule: {row['mesh_rule']})",
            f"{recompute_text} (remat: {row['remat_as_configured']})",
            f"{row['precision']} compute, fp32 gradient reduction (fp32 parameters)",
            row["notes"],
        )

        def build(row: dict[str, str] = row, chips: int = chips, batch: int = batch, seq: int = seq,
                  micro: int = micro, shard: int = shard, modules: tuple[str, ...] = modules,
                  offload_qkv: bool = offload_qkv) -> tuple[Model, System, Plan]:
            recompute: dict[str, object] = {"recompute": row["recompute"], "offload_qkv": offload_qkv}
            if modules:
                recompute["recompute_modules"] = modules
            plan = Plan(tp=1, pp=1, dp=chips, micro_batch=micro, global_batch=batch, seq_len=seq, sp=False,
                        zero=3, dp_shard=shard, precision=row["precision"], grad_reduce="fp32",
                        overlap_dp=True, **recompute)
            return load_model(row["model"]), load_system(row["system"]), plan

        out.add(label, "step_time_s", published, build, assumptions,
                f"{row['source']}; plan: {row['plan_source']}", recipe_fields=AXLEARN_RECIPE_FIELDS)
    return out.cases
