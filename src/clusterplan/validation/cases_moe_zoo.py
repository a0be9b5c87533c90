"""Megatron-Core's MoE model zoo (NVIDIA, github.com/yanring/Megatron-MoE-ModelZoo,
best_practice/qwen3): Qwen3-235B-A22B training runs on 256 H100 with the dispatcher (DeepEP or
the NCCL all-to-all), the EP placement (across nodes or inside one) and the overlap as printed,
and on GB200 / GB300 NVL72 with HybridEP.

The H100 table prints the step time itself. The Blackwell tables print only TFLOP/s per GPU
(Megatron's own FLOP count); at 4,096 tokens the same source's H100 rows fix that count per
token (TFLOP/s x GPUs x step time / tokens per step agree within 1 % over the five rows), which
turns the Blackwell TFLOP/s into tokens/s per GPU. Rows at other sequence lengths, whose count
the source does not give, and rows that need mechanisms clusterplan lacks are listed with the
reason.
"""

from __future__ import annotations

import statistics

from clusterplan.catalog import load_model, load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.specs.plan import balanced_layer_split
from clusterplan.validation.cases import Case, _Builder, _rows

_SYSTEMS = {"H100": "dgx-h100", "GB200": "gb200-nvl72", "GB300": "gb300-nvl72"}
_MODELS = {"Qwen3-235B-A22B": "qwen3-235b-a22b"}
#: The zoo's recompute column -> Megatron --recompute-modules ('norm, act' = layernorm, moe_act).
_RECOMPUTE = {"norm, act": ("layernorm", "moe_act"), "moe_act, layernorm": ("layernorm", "moe_act")}
#: The sequence length at which the source's H100 rows fix Megatron's FLOPs per token.
_COUNTED_SEQ = 4096


def _flops_per_token(rows: list[dict[str, str]]) -> float:
    """Megatron's FLOPs per token of Qwen3-235B at 4,096 tokens, from the rows that print both
    the step time and the TFLOP/s per GPU (their mean)."""
    counts = [float(r["tflops_per_gpu"]) * 1e12 * int(r["gpus"]) * float(r["step_time_s"])
              / (int(r["global_batch_size_seqs"]) * int(r["seq_len_tokens"]))
              for r in rows if r["step_time_s"] and r["model"] in _MODELS
              and int(r["seq_len_tokens"]) == _COUNTED_SEQ]
    return statistics.fmean(counts)


def megatron_moe_modelzoo() -> list[Case]:
    out = _Builder("megatron_moe_modelzoo")
    rows = _rows("megatron_moe_modelzoo")
    per_token = _flops_per_token(rows)
    for row in rows:
        gpus, seq = int(row["gpus"]), int(row["seq_len_tokens"])
        tp, cp, ep, pp, vp = (int(row[k]) for k in ("tp", "cp", "ep", "pp", "vp"))
        mb, batch = int(row["micro_batch_size"]), int(row["global_batch_size_seqs"])
        label = (f"{row['model']} {gpus} {row['system']} {row['precision']} {row['dispatcher']} "
                 f"TP{tp} CP{cp} EP{ep} PP{pp} VP{vp} mb{mb} seq {seq}"
                 + (" +a2a overlap" if row["a2a_overlap"] == "yes" else ""))
        if row["step_time_s"]:
            metric, published = "step_time_s", float(row["step_time_s"])
        else:
            metric = "tokens_per_s_per_chip"
            published = float(row["tflops_per_gpu"]) * 1e12 / per_token
        if row["model"] not in _MODELS:
            out.skip(label, metric, published, "hybrid Gated DeltaNet / attention model: linear-attention "
                     "layers are not modelled", row["source"])
            continue
        if metric != "step_time_s" and seq != _COUNTED_SEQ:
            out.skip(label, metric, float(row["tflops_per_gpu"]),
                     f"TFLOP/s only, at {seq} tokens: the source gives Megatron's FLOP count per token only "
                     f"at {_COUNTED_SEQ} (through its H100 step times)", row["source"])
            continue
        if "moe" in [m.strip() for m in row["recompute"].split(",")]:
            out.skip(label, metric, published, "recompute module 'moe' (the whole MoE layer) is not modelled",
                     row["source"])
            continue
        if "offloading" in row["notes"]:
            out.skip(label, metric, published, "fine-grained activation offloading with pipeline parallelism "
                     "is not modelled (offload_layers needs pp=1)", row["source"])
            continue
        recompute = row["recompute"].strip()
        modules = _RECOMPUTE.get(recompute)
        precision = "fp8" if "FP8" in row["precision"] else "bf16"
        fsdp = row["fsdp"] == "yes"
        overlap = row["a2a_overlap"] == "yes"
        dispatcher = "all_to_all" if row["dispatcher"] == "A2A" else "deduplicated"

        def build(row: dict[str, str] = row, gpus: int = gpus, seq: int = seq, tp: int = tp, cp: int = cp,
                  ep: int = ep, pp: int = pp, vp: int = vp, mb: int = mb, batch: int = batch,
                  recompute: str = recompute, modules: tuple[str, ...] | None = modules,
                  precision: str = precision, fsdp: bool = fsdp, overlap: bool = overlap,
                  dispatcher: str = dispatcher) -> tuple[Model, System, Plan]:
            model = load_model(_MODELS[row["model"]])
            system = load_system(_SYSTEMS[row["system"]])
            split = balanced_layer_split(model.layers, pp, vp)
            layers: dict[str, object] = ({"first_stage_layers": split[0], "last_stage_layers": split[2]}
                                         if split is not None and split[0] != split[1] else {})
            settings: dict[str, object] = (
                {"recompute": "full"} if recompute == "full" else
                {"recompute": "selective", "recompute_modules": modules} if modules else {"recompute": "none"})
            plan = Plan(tp=tp, cp=cp, pp=pp, vp=vp, dp=gpus // (tp * cp * pp), ep=ep, micro_batch=mb,
                        global_batch=batch, seq_len=seq, sp=tp > 1, zero=3 if fsdp else 1,
                        precision=precision, fp8_params=precision == "fp8", overlap_dp=True,
                        overlap_tp=precision == "bf16", grad_reduce="fp32", fused_cross_entropy=True,
                        routing_gini=0.0, overlap_ep=overlap, moe_dispatcher=dispatcher,
                        **settings, **layers)
            return model, system, plan

        assumptions = [
            f"dispatcher {row['dispatcher']} -> {dispatcher}",
            "force-balanced routing: routing Gini 0 (the zoo's benchmarking scripts pass "
            "--moe-router-force-load-balancing)",
            ("TP comm overlap on (sbatch_benchmarking.sh adds --tp-comm-overlap for bf16)" if precision == "bf16"
             else "MXFP8 recipe: fp8 parameters (--fp8-param-gather), no TP comm overlap"),
            "DP overlap (--overlap-grad-reduce/--overlap-param-gather), fp32 gradient reduction, fused "
            "cross-entropy (model_configs/benchmarking/Qwen3-235B-A22B.yaml)",
            "EP all-to-alls overlapped with another micro-batch (1F1B a2a overlap)" if overlap
            else "EP all-to-all not overlapped (A2A_OVERLAP=0)",
            "expert TP 1; layers split in balance over the pipeline (layout not printed)",
        ]
        if fsdp:
            assumptions.append("FSDP as ZeRO-3 over the data-parallel replicas")
        if metric == "tokens_per_s_per_chip":
            assumptions.append(f"tokens/s per GPU = TFLOP/s / {per_token / 1e9:.1f} GFLOP per token (Megatron's "
                               "count, from the same source's H100 rows at 4,096 tokens)")
        if "cuda graphs" in row["notes"]:
            assumptions.append("CUDA graphs of attention and router: not credited")
        out.add(label, metric, published, build, tuple(assumptions), row["source"])
    return out.cases
