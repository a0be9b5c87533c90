"""MosaicML LLM Foundry's MPT training benchmarks: tokens/s per GPU of MPT 125M-70B under PyTorch FSDP.

The tables in ``scripts/train/benchmarking/README.md`` of mosaicml/llm-foundry (last changed at
4952183, 2024-04-22) print, per run, the model size, sequence length, GPU count, micro-batch,
gradient accumulation, global batch, FSDP sharding strategy and mixed-precision mode, whether
activation checkpointing was on, and the measured throughput (sequences/s, tokens/s and tokens/s
per GPU). Each run is a short sweep run (``submit_benchmarks.py``: 12 steps, read after warm-up)
of the ``scripts/train/yamls/pretrain/mpt-<size>.yaml`` model with flash attention. The printed
tokens/s per GPU is the compared metric: no FLOP-count conversion is needed.

Every run is pure data parallelism (Composer's FSDP; no tensor or pipeline parallelism), so the
plan is ``dp = GPUs`` with ZeRO-3 (``FULL_SHARD``) or ZeRO-2 (``SHARD_GRAD_OP``) over all of them.
"""

from __future__ import annotations

from clusterplan.catalog import load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.cases import Case, _Builder, _rows

#: MPT sizes of the sweep -> (layers, d_model, heads): scripts/train/yamls/pretrain/mpt-<size>.yaml
#: of mosaicml/llm-foundry at 4952183 (the 760m, 1b and 3b yamls cut the heads to 12/16/20 so that
#: d_head is 128 for FlashAttention). Every size has expansion_ratio 4 (GELU FFN), vocab 50,368,
#: no biases, and ties the output layer to the token embedding (MPT's default).
MPT_SIZES: dict[str, tuple[int, int, int]] = {
    "125m": (12, 768, 12),
    "350m": (24, 1024, 16),
    "760m": (24, 1536, 12),
    "1b": (24, 2048, 16),
    "3b": (32, 2560, 20),
    "7b": (32, 4096, 32),
    "13b": (40, 5120, 40),
    "30b": (48, 7168, 56),
    "70b": (80, 8192, 64),
}
MPT_VOCAB = 50368
MPT_SOURCE = ("mosaicml/llm-foundry scripts/train/yamls/pretrain/mpt-<size>.yaml at "
              "495218376830947dce625efabc4d86be7c47cc45")
#: GPU as printed -> catalog system. The A100 tables state "1600 Gbps node-node interconnect
#: (RoCE)": 8 x 200 Gb/s per 8-GPU node, the DGX A100's 200 Gb/s per GPU; the A100 40GB nodes are
#: that system with the 40 GB chip (:func:`a100_40gb_nodes`). The H100 tables print no network:
#: 8 x 400 Gb/s per node (DGX H100 / HGX H100 reference) is assumed.
LLMFOUNDRY_SYSTEMS = {"a100_80gb": "dgx-a100", "a100_40gb": "dgx-a100", "h100_80gb": "dgx-h100"}
LLMFOUNDRY_CHIPS = {"a100_40gb": "a100-40gb"}
#: FSDP sharding strategy as printed -> ZeRO stage.
SHARDING = {"FULL_SHARD": 3, "SHARD_GRAD_OP": 2}
#: Composer's FSDP mixed-precision modes (composer/distributed/mosaic_fsdp_utils.py
#: get_mixed_precision): DEFAULT gathers bf16 parameters and reduces gradients in fp32; PURE keeps
#: parameters, gradient reduction and buffers in bf16.
GRAD_REDUCE = {"DEFAULT": "fp32", "PURE": "bf16"}


def llmfoundry_system(gpu: str) -> System:
    """The catalog system of the row's GPU; A100 40GB rows: the DGX A100 (NVLink 3, 200 Gb/s per GPU)
    with the 40 GB chip, a validation view (the catalog prices no 40 GB system)."""
    system = load_system(LLMFOUNDRY_SYSTEMS[gpu])
    chip = LLMFOUNDRY_CHIPS.get(gpu)
    if chip is None:
        return system
    view = system.model_copy(update={"name": f"{system.name}-{chip}", "chip": chip, "aliases": (),
                                     "notes": f"validation view: {system.name} nodes with {chip} GPUs"})
    return System.model_validate(view.model_dump())


def mpt_model(size: str) -> Model:
    layers, hidden, heads = MPT_SIZES[size]
    return Model(name=f"MPT {size}", layers=layers, hidden_size=hidden, ffn_hidden_size=4 * hidden,
                 attention_heads=heads, kv_heads=heads, vocab_size=MPT_VOCAB, ffn_activation="gelu",
                 tied_embeddings=True, source=MPT_SOURCE.replace("<size>", size))


#: The tables' attention kernels (docs/attention-kernels.md, section 6). The H100 large-scale
#: table (llm-foundry 5e85bd62d, 2024-01) ran ``sweep.py``: ``--attn_impl flash`` (flash-attn
#: 2.4.2, the ``gpu-flash2`` extra ``submit_benchmarks.py`` installs) for 1b/3b/7b/70b and
#: ``--attn_impl triton`` for 13b/30b. The other tables, H100 and A100 alike (b2a43a147,
#: 2023-10, which re-ran the A100 tables too), ran ``submit_benchmarks.py``'s default
#: ``--attn_impl triton`` with the ``gpu`` extra (flash-attn 1.0.9, no FlashAttention-2).
#: ``triton`` is llm-foundry's copy of HazyResearch's ``flash_attn_triton.py`` ("FlashAttention
#: Triton"), which the FlashAttention-2 paper's A100 figure times at 0.97 of FlashAttention-1
#: (causal, head dim 128, 4k-16k tokens: 74/78/80 against 76/80/83 TFLOP/s; catalog/kernels.yaml):
#: it is taken at FlashAttention-1's rate, measured on A100 and H100 (the Triton kernel itself
#: only on A100).
LARGE_SCALE_TRITON_SIZES = frozenset({"13b", "30b"})
ATTENTION_ASSUMPTION = {
    "flash2": "attention: FlashAttention-2 (flash-attn 2.4.2, sweep.py's --attn_impl flash; "
              "docs/attention-kernels.md)",
    "flash1": "attention: llm-foundry's FlashAttention-Triton kernel (attn_impl triton), taken at "
              "FlashAttention-1's rate (0.97 of it on A100; docs/attention-kernels.md)",
}


def h100_attention_kernel(table: str, size: str) -> str:
    """The H100 row's attention kernel by its table and model size (:data:`ATTENTION_ASSUMPTION`)."""
    large_scale = "Large Scale" in table
    return "flash2" if large_scale and size not in LARGE_SCALE_TRITON_SIZES else "flash1"


def attention_kernel(table: str, size: str, gpu: str) -> str:
    """A row's attention kernel: the H100 tables' by :func:`h100_attention_kernel`; the A100
    tables (2023-10, the Triton default) ``flash1``."""
    return h100_attention_kernel(table, size) if gpu == "h100_80gb" else "flash1"


def llmfoundry_mpt() -> list[Case]:
    """Published tokens/s per GPU of each benchmark row against its FSDP plan."""
    out = _Builder("llmfoundry_mpt")
    for row in _rows("llmfoundry_mpt"):
        size, gpu = row["model"], row["gpu"]
        gpus, mb, batch = int(row["num_gpus"]), int(row["micro_batch_size"]), int(row["global_batch_size_seqs"])
        seq = int(row["seq_len_tokens"])
        checkpointing = row["activation_checkpointing"] == "True"
        label = (f"MPT {size} seq {seq}, {gpus} x {gpu} ({row['sharding_strategy']}, mb {mb}"
                 f"{', AC' if checkpointing else ''}{', fp8' if row['precision'] == 'amp_fp8' else ''})")
        published = float(row["tokens_per_s_per_gpu"])
        system_name = LLMFOUNDRY_SYSTEMS.get(gpu)
        reasons = []
        if system_name is None:
            reasons.append(f"GPU '{gpu}' is not in the catalog")
        if row["activation_cpu_offload"] != "False":
            reasons.append("activation CPU offload")
        if size not in MPT_SIZES:
            reasons.append(f"MPT size '{size}' has no yaml")
        if reasons or system_name is None:
            out.skip(label, "tokens_per_s_per_chip", published, "; ".join(reasons), row["source"])
            continue
        zero = SHARDING[row["sharding_strategy"]]
        precision = "fp8" if row["precision"] == "amp_fp8" else "bf16"
        grad_reduce = GRAD_REDUCE[row["fsdp_mixed_precision"]]
        assumptions = [
            f"FSDP {row['sharding_strategy']} (ZeRO-{zero}) over all {gpus} GPUs, no TP/PP; parameters "
            "gathered per micro-batch, prefetch on",
            f"{'full' if checkpointing else 'no'} activation checkpointing (as printed); flash attention "
            "(the yamls' attn_impl)",
            f"{row['fsdp_mixed_precision']} mixed precision: {grad_reduce} gradient reduction (Composer)",
            "tokens/s per GPU as printed (short sweep run of 12 steps)",
        ]
        if precision == "fp8":
            assumptions.append("amp_fp8: Transformer Engine fp8 GEMMs")
        kernel = attention_kernel(row["hardware_as_printed"], size, gpu)
        if gpu == "h100_80gb":
            assumptions.append("network not printed: 8 x 400 Gb/s per node (DGX H100) assumed")
        else:
            assumptions.append("'1600 Gbps node-node (RoCE)' = 200 Gb/s per GPU, as the DGX A100's; NVLink 3 assumed")
        assumptions.append(ATTENTION_ASSUMPTION[kernel])

        def build(size: str = size, gpu: str = gpu, gpus: int = gpus, mb: int = mb,
                  batch: int = batch, seq: int = seq, zero: int = zero, precision: str = precision,
                  checkpointing: bool = checkpointing, grad_reduce: str = grad_reduce,
                  kernel: str = kernel) -> tuple[Model, System, Plan]:
            plan = Plan(tp=1, pp=1, dp=gpus, micro_batch=mb, global_batch=batch, seq_len=seq,
                        recompute="full" if checkpointing else "none", sp=False, zero=zero,
                        precision=precision, grad_reduce=grad_reduce, overlap_dp=True, flash_attention=True,
                        attention_kernel=kernel)
            return mpt_model(size), llmfoundry_system(gpu), plan

        out.add(label, "tokens_per_s_per_chip", published, build, tuple(assumptions), row["source"])
    return out.cases
