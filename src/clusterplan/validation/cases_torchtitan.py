"""torchtitan's published training benchmarks (pytorch/torchtitan ``benchmarks/``): tokens/s per GPU.

Three reports, all PyTorch-native (FSDP2, TP/async TP, PP, CP, torch.compile, torchao float8):
the torchtitan team's Llama 3.1 8B/70B/405B tables of December 2024 and the async-TP tables of
June 2025, both on Meta's Grand Teton hosts, and Trainy's Llama 3.1 8B FSDP runs on 32 and 64 H200
(June 2025). The tokens/s per GPU is compared as printed.

The Grand Teton GPUs are H100s with 96 GB of HBM2e at 2.4 TB/s run at a 500 W power limit; the
report itself says their peak TFLOP/s is unknown ("between SXM and NVL"), so no catalog chip can
be sourced for them and those rows are listed as not modelled. The H200 rows run on ``dgx-h200``
(8 H200 a host on NVLink, 400 Gb/s per GPU, as the report prints).
"""

from __future__ import annotations

from clusterplan.catalog import load_model, load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.cases import Case, _Builder, _rows

TORCHTITAN_MODELS = {"Llama 3.1 8B": "llama3-8b", "Llama 3.1 70B": "llama3-70b", "Llama 3.1 405B": "llama3-405b"}
GRAND_TETON_REASON = ("Grand Teton H100 96GB HBM2e at a 500 W power limit is not in the catalog (the report: "
                      "its peak TFLOP/s is unknown, between H100 SXM and NVL)")


def torchtitan() -> list[Case]:
    out = _Builder("torchtitan")
    for row in _rows("torchtitan"):
        gpus = int(row["num_gpus"])
        label = f"{row['model']}, {gpus} GPUs: {row['configuration']} ({row['table']})"
        published = float(row["tokens_per_s_per_gpu"])
        if row["hardware_as_printed"].startswith("Grand Teton"):
            out.skip(label, "tokens_per_s_per_chip", published, GRAND_TETON_REASON, row["source"])
            continue
        fsdp, batch, seq = int(row["fsdp"]), int(row["global_batch_size_seqs"]), int(row["seq_len_tokens"])
        local = int(row["local_batch_size"])
        fp8 = row["float8"] not in ("", "no")
        assumptions = (
            f"FSDP2 over all {gpus} GPUs (ZeRO-3), local batch {local}, no gradient accumulation",
            "selective activation checkpointing (torchtitan 'op' policy) taken as selective recompute of the "
            "attention core",
            "bf16 parameters gathered, fp32 gradient reduce-scatter (FSDP2 mixed-precision defaults)"
            + ("; float8 tensorwise GEMMs with float8 all-gather of the weights (fp8 parameters)" if fp8 else ""),
            "torch.compile fusions not credited",
            "attention: FlashAttention-2 (PyTorch SDPA's flash backend; cuDNN SDPA was opt-in in the pinned "
            "nightly, docs/attention-kernels.md)",
        )

        def build(row: dict[str, str] = row, fsdp: int = fsdp, batch: int = batch, seq: int = seq, local: int = local,
                  fp8: bool = fp8) -> tuple[Model, System, Plan]:
            plan = Plan(tp=1, pp=1, dp=fsdp, micro_batch=local, global_batch=batch, seq_len=seq,
                        recompute="selective", sp=False, zero=3, precision="fp8" if fp8 else "bf16",
                        fp8_params=fp8, grad_reduce="fp32", overlap_dp=True, attention_kernel="flash2")
            return load_model(TORCHTITAN_MODELS[row["model"]]), load_system("dgx-h200"), plan

        out.add(label, "tokens_per_s_per_chip", published, build, assumptions, row["source"])
    return out.cases
