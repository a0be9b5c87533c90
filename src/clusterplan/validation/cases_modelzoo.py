"""Published Megatron-Core MoE training runs with the plan of every run, fitted in the MoE stage.

NVIDIA's Megatron-Core MoE team's Qwen3 training results (the Megatron-MoE-ModelZoo repository,
``best_practice/qwen3/readme.md`` at e865051): Qwen3-235B-A22B on 256 H100, on GB200 NVL72 and on
GB300 NVL72. The H100 table prints step time and model TFLOP/s per GPU with the full plan (TP, CP,
EP, PP, VPP, EP-DP, DP, FSDP, micro and global batch, recompute, dispatcher): those rows compare
the step time. The H100 long-context table and the GB200/GB300 tables print TFLOP/s only; their
plans come from the commands printed beside them.

NVIDIA's DeepSeek-V3 guide, "Optimizing DeepSeek-V3 Training Performance on NVIDIA GB200 NVL72"
(NVIDIA/Megatron-LM at 79e8592bb7, ``docs/discussions/deepseek-v3-gb200-optimization/``, removed
by the next commit as a draft being updated): the final row of its optimization history, 970.01
TFLOP/s per GPU on 256 GB200, with the launch script of its reproduce guide as the plan.

The TFLOP/s-only rows compare tokens/s per GPU: the TFLOP/s over the FLOPs per token that
Megatron-LM's own throughput log counts (:func:`megatron_flops_per_token`), checked on the H100
rows that print both figures.

Settings no Qwen3 column prints come from the ModelZoo's launch files (cited per row in the
CSV's ``plan_source``): ``model_configs/benchmarking/Qwen3-235B-A22B.yaml`` (sequence parallel,
distributed optimizer with overlapped gradient reduce-scatter and parameter all-gather, TE
fused cross-entropy, expert TP 1, the embedding and the loss each counted as a pipeline layer),
``runtime_configs/benchmarking/runtime.conf`` (96 = 94 layers + embedding + loss, micro-batch
1) and ``sbatch_benchmarking.sh`` (the dispatcher, ``--tp-comm-overlap`` for bf16, the MXFP8
optimizer settings, A2A_OVERLAP). The DeepSeek-V3 row's come from its launch script, whose
``--pipeline-model-parallel-layout`` places the layers (:func:`layout_stage_layers`). What the
estimate cannot express (CUDA graphs, fine-grained activation offloading, manual GC) is stated
with each row as not modelled.
"""

from __future__ import annotations

import math
import re

from clusterplan.catalog import load_model, load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.case import Case, _Builder, _rows

TABLE = "megatron_moe_modelzoo"
REPO = "github.com/yanring/Megatron-MoE-ModelZoo @ e865051"
#: The DeepSeek-V3 GB200 guide: its last commit before its removal (3c1b98efdc).
GUIDE = "github.com/NVIDIA/Megatron-LM @ 79e8592bb7"
#: The Megatron-LM commit the guide's reproduce guide runs (l.87): the FLOP count of its row.
GUIDE_CODE = "effebd81f4"
#: Model-config ``--make-vocab-size-divisible-by`` (Qwen3-235B-A22B.yaml l.76): Megatron pads
#: the tokenizer's vocabulary to a multiple of this times TP. 151,936 = 128 x 1187, so the padded
#: vocabulary is config.json's 151,936 embedding rows for TP 1, 2 and 4 (Qwen's tokenizer has
#: 151,643 regular tokens plus its special tokens, above 151,936 - 4 x 1187). Each row's CSV
#: ``vocab_divisible_by`` gives its own run's value (the DeepSeek-V3 command's 3232).
VOCAB_DIVISIBLE_BY = 1187
#: Megatron counts the embedding and the loss as one pipeline layer each
#: (``--account-for-embedding-in-pipeline-split``, ``--account-for-loss-in-pipeline-split``:
#: runtime.conf's 96 layers for the 94-layer model), so the first and last stage hold one
#: transformer layer fewer than the others.
PIPELINE_EXTRA_LAYERS = 2
SKIP_HYBRID = ("Qwen3-Next-80B-A3B: hybrid Gated DeltaNet linear-attention / attention MoE with a shared "
               "expert and MTP; linear-attention layers are not modelled")
#: Plan settings no table column prints (the launch files give them): at the CLI's defaults a
#: user who types the printed plan gets 16-bit gradient reduction, no TP overlap, an unfused
#: cross-entropy and balanced routing.
RECIPE_FIELDS: tuple[str, ...] = ("grad_reduce", "overlap_tp", "fused_cross_entropy", "routing_gini", "ep_dedup",
                                 "attention_kernel")
#: The TFLOP/s-only tables print neither recompute nor the all-to-all overlap nor the MXFP8
#: optimizer settings: their commands do.
COMMAND_FIELDS = ("recompute", "recompute_modules", "fp8_params", "optimizer_moments", "offload_modules")


def padded_vocab(vocab: int, tp: int, divisible_by: int = VOCAB_DIVISIBLE_BY) -> int:
    """Megatron's padded vocabulary: ``vocab`` rounded up to a multiple of ``divisible_by * tp``
    (megatron/core/tokenizers/utils/build_tokenizer.py ``vocab_size_with_padding``)."""
    multiple = divisible_by * tp
    return math.ceil(vocab / multiple) * multiple


def megatron_flops_per_token(model: Model, seq_len: int, tp: int = 1,
                             divisible_by: int = VOCAB_DIVISIBLE_BY) -> float:
    """Training FLOPs per token as Megatron-LM's throughput log counts them for a MoE model with
    GQA or multi-latent attention, optional leading dense layers and shared experts, and no
    multi-token prediction: ``num_floating_point_operations`` in megatron/training/training.py
    (NVIDIA/Megatron-LM at 1e057005, the Qwen3 H100 rows' code, and unchanged for these models at
    d98e8a64 and at effebd81f4, the DeepSeek-V3 row's code), divided by the global batch's tokens.

    Every GEMM counts 3 times (forward, data and weight gradients) at 2 FLOPs per multiply-add:
    per layer the attention projections and the attention core over a causal mask (half of
    ``seq_len`` keys for the scores and again for the values); the FFN of each layer (SwiGLU:
    gate, up and down projections), the dense width on the leading dense layers, the ``top_k``
    routed plus the shared experts on the MoE layers; once, the LM head over the padded
    vocabulary. GQA counts the Q/K/V and output projections. MLA (Megatron's
    ``--multi-latent-attention`` branch) counts the query down- and up-projections (with a
    query LoRA rank: ``q_lora_rank * (h + n * (d_nope + d_rope) + 1)``, the ``+ 1`` for the
    query norm as Megatron writes it), the KV down- and up-projections ``kv_lora_rank * (h + n *
    (d_nope + d_v) + 1)``, the shared RoPE key ``h * d_rope``, the output projection ``n * d_v *
    h`` and the core ``s/2 * n * (d_nope + d_rope)`` plus ``s/2 * n * d_v``. Norms (bar MLA's
    ``+ 1``), the router and rotary embeddings are not counted, as Megatron does not.
    """
    moe = model.moe
    if moe is None or moe.layer_interval != 1 or model.ffn_activation != "swiglu":
        raise ValueError(f"{model.name}: only SwiGLU MoE models whose layers after the dense ones are all MoE "
                         "are counted here")
    h = model.hidden_size
    mla = model.mla
    core: float
    if mla is None:
        head_dim = model.head_dim or h // model.attention_heads
        q = model.attention_heads * head_dim
        kv = model.kv_heads * head_dim
        projections = h * (q + 2 * kv) + q * h
        core = q * seq_len  # causal: 2 GEMMs x seq/2 keys
    else:
        n, d_nope, d_rope, d_v = model.attention_heads, mla.qk_nope_head_dim, mla.qk_rope_head_dim, mla.v_head_dim
        query = (h * n * (d_nope + d_rope) if mla.q_lora_rank is None
                 else mla.q_lora_rank * (h + n * (d_nope + d_rope) + 1))
        key_value = mla.kv_lora_rank * (h + n * (d_nope + d_v) + 1) + h * d_rope
        projections = query + key_value + n * d_v * h
        core = seq_len * n * (d_nope + d_rope + d_v) / 2  # causal: seq/2 keys for scores and values
    # SwiGLU: 3 matrices per FFN; the dense layers at their own width, the MoE layers' routed and
    # shared experts at the expert width.
    routed_and_shared = moe.expert_ffn_hidden_size * (moe.top_k + moe.shared_experts)
    ffn = 3 * h * (model.dense_ffn_layers * model.dense_ffn_size + model.moe_layers * routed_and_shared)
    head = h * padded_vocab(model.vocab_size, tp, divisible_by)
    return 6.0 * (model.layers * (projections + core) + ffn + head)


def stage_layers(layers: int, pp: int) -> dict[str, int]:
    """First and last stage layers under Megatron's embedding- and loss-aware split (empty
    without a pipeline): ``(layers + 2) / pp`` per stage, one fewer on the first and the last."""
    if pp == 1:
        return {}
    per_stage, rest = divmod(layers + PIPELINE_EXTRA_LAYERS, pp)
    if rest:
        raise ValueError(f"{layers} layers + embedding + loss do not split over pp={pp}")
    return {"first_stage_layers": per_stage - 1, "last_stage_layers": per_stage - 1}


def layout_stages(layout: str) -> list[str]:
    """The virtual pipeline stages of a Megatron ``--pipeline-model-parallel-layout`` string, each
    as its layer characters (``E`` embedding, ``t`` transformer layer, ``m`` MTP layer, ``L``
    loss): stages split at ``|``, ``(...)*n`` and ``x*n`` repeat, commas are cosmetic
    (docs/source/api-guide/pipeline_parallel_layout.md at effebd81f4)."""
    text = layout.replace(",", "")
    while "(" in text:
        expanded = re.sub(r"\(([^()]*)\)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), text)
        if expanded == text:
            raise ValueError(f"layout {layout!r}: unbalanced or unrepeated parentheses")
        text = expanded
    text = re.sub(r"(.)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), text)
    stages = text.split("|")
    unknown = set(text) - set("EtmL|")
    if unknown:
        raise ValueError(f"layout {layout!r}: unknown layer characters {sorted(unknown)}")
    return stages


def layout_stage_layers(layout: str, layers: int, pp: int, vp: int) -> dict[str, int]:
    """First and last pipeline ranks' transformer layers under a Megatron layout: virtual stage
    ``i`` runs on pipeline rank ``i mod pp`` (Megatron's PipelineParallelLayerLayout), so a rank
    holds stages ``rank, rank + pp, ...``. The Plan takes a first, a last and an even middle
    count: a layout whose middle ranks differ, that has MTP layers, or that puts the embedding
    elsewhere than the first virtual stage or the loss elsewhere than the last, is refused."""
    stages = layout_stages(layout)
    if len(stages) != pp * vp:
        raise ValueError(f"layout {layout!r}: {len(stages)} virtual stages, not pp*vp = {pp}*{vp}")
    joined = "".join(stages)
    if "m" in joined:
        raise ValueError(f"layout {layout!r}: MTP layers are not in this table's runs")
    if joined.count("E") != 1 or joined.count("L") != 1 or "E" not in stages[0] or "L" not in stages[-1]:
        raise ValueError(f"layout {layout!r}: the embedding must open the first stage, the loss the last")
    per_rank = [sum(stage.count("t") for stage in stages[rank::pp]) for rank in range(pp)]
    if sum(per_rank) != layers or len(set(per_rank[1:-1])) > 1:
        raise ValueError(f"layout {layout!r}: ranks hold {per_rank} of {layers} layers (an even middle needed)")
    return {"first_stage_layers": per_rank[0], "last_stage_layers": per_rank[-1]}


def row_stage_layers(row: dict[str, str], layers: int) -> dict[str, int]:
    """The row's pipeline split: its printed layout where it has one, else the embedding- and
    loss-aware even split."""
    pp, vp = int(row["pp"]), int(row["vpp"])
    if row["pp_layout"]:
        return layout_stage_layers(row["pp_layout"], layers, pp, vp)
    return stage_layers(layers, pp)


def _label(row: dict[str, str]) -> str:
    plan = f"TP{row['tp']} CP{row['cp']} EP{row['ep']} PP{row['pp']} VPP{row['vpp']}"
    extra = " FSDP" if row["fsdp"] == "On" else ""
    overlap = " +1f1b overlap" if row["a2a_overlap"] == "1" else ""
    return (f"{row['model_as_printed']} {row['gpu']} x{row['gpus']} {row['precision_as_printed']} s{row['seq_len']} "
            f"{plan}{extra} MBS{row['mbs']} GBS{row['gbs']} {row['dispatcher']}{overlap} ({row['row_id']})")


def _recompute_text(row: dict[str, str]) -> str:
    printed = f" (printed: '{row['recompute_as_printed']}')" if row["recompute_as_printed"] else " (the command's)"
    if row["recompute"] == "selective":
        return f"selective recompute of {', '.join(row['recompute_modules'].split(';'))}" + printed
    if row["recompute"] == "full":
        return ("full recompute, assumed uniform over 1 layer (the readme's fallback flags; the row's command is "
                "not published)" + printed)
    return "no recompute" + (" (blank in the table; none in the scripts for this plan)"
                             if row["table_as_printed"] == "H100" else " (none in the command)")


def _assumptions(row: dict[str, str], model: Model, dp: int, metric_note: str) -> tuple[str, ...]:
    tp, cp, ep, pp = (int(row[k]) for k in ("tp", "cp", "ep", "pp"))
    split = stage_layers(model.layers, pp)
    stages = (f", {split['first_stage_layers']}/{(model.layers + 2) // pp}/{split['last_stage_layers']} layers on "
              "the first/middle/last stage (embedding and loss counted as layers)" if split else "")
    fp8 = row["precision"] == "fp8"
    dedup = row["dispatcher"] in ("DeepEP", "HybridEP")
    if row["table_as_printed"] == "H100":
        balance = ("force-balanced routing assumed (the table does not say; the repository's H100 commands pass "
                   "--moe-router-force-load-balancing): routing Gini 0")
    elif row["tflops_dropless"]:
        balance = (f"force-balanced routing, the printed forced-balance figure (the readme: add "
                   f"--moe-router-force-load-balancing): routing Gini 0; dropless: {row['tflops_dropless']} TFLOP/s")
    else:
        balance = "force-balanced routing (the command's --moe-router-force-load-balancing): routing Gini 0"
    return (
        f"TP{tp}" + (" with sequence parallelism (config --sequence-parallel)" if tp > 1 else "")
        + f", CP{cp}, PP{pp} VPP{row['vpp']}{stages}, EP{ep} ETP1 (config), DP{dp}, expert DP {tp * cp * dp // ep}; "
        f"micro-batch {row['mbs']}" + ("" if row["table_as_printed"] == "H100" else " (runtime.conf default)"),
        "FSDP (printed 'On'): ZeRO-3 over the data-parallel ranks" if row["fsdp"] == "On" else
        "distributed optimizer (ZeRO-1), gradient reduce-scatter and parameter all-gather overlapped (config)",
        _recompute_text(row) + (f"; the inputs of {', '.join(row['offload_modules'].split(';'))} offloaded to host "
                                "(the command's --offload-modules; memory only, the copies' time not modelled)"
                                if row["offload_modules"] else ""),
        (f"{row['dispatcher']} dispatcher (--moe-token-dispatcher-type flex): each token sent once per destination "
         "node (ep_dedup)" if dedup else "A2A dispatcher: flat all-to-all of every routed copy"),
        ("EP all-to-alls overlapped with another micro-batch's compute (A2A_OVERLAP=1: "
         "--overlap-moe-expert-parallel-comm --delay-wgrad-compute): stated, not credited (the model's overlap "
         "hides them all; this table's H100 pair gains 11 %, docs/moe.md)" if row["a2a_overlap"] == "1"
         else "EP all-to-alls not overlapped (A2A_OVERLAP=0)"),
        balance,
        ("MXFP8 modelled as fp8: fp8 parameters (--fp8-param-gather), bf16 Adam moments and fp32 main gradients "
         "(--use-precision-aware-optimizer), no TP communication overlap (only bf16 runs get --tp-comm-overlap)"
         if fp8 else "bf16 with fp32 gradient accumulation and reduction (Megatron's default for bf16), TP "
         "communication overlap (--tp-comm-overlap, added for bf16)"),
        "fused cross-entropy on bf16 logits (config --cross-entropy-fusion-impl te)",
        metric_note,
        f"not modelled: {row['not_modelled']}",
    )


def _guide_assumptions(row: dict[str, str], model: Model, dp: int, metric_note: str) -> tuple[str, ...]:
    """The DeepSeek-V3 GB200 guide's row: its plan is the reproduce guide's launch script."""
    tp, cp, ep, pp, vp = (int(row[k]) for k in ("tp", "cp", "ep", "pp", "vpp"))
    split = row_stage_layers(row, model.layers)
    first, last = split["first_stage_layers"], split["last_stage_layers"]
    middle = (model.layers - first - last) // (pp - 2)
    dense = model.dense_ffn_layers
    return (
        f"TP{tp}, CP{cp}, PP{pp} VPP{vp}, EP{ep} ETP{row['etp']}, DP{dp}, expert DP {tp * cp * dp // ep}; "
        f"micro-batch {row['mbs']}, global batch {row['gbs']} (the guide's text and the launch script)",
        f"pipeline layout {row['pp_layout']} (--pipeline-model-parallel-layout): {pp * vp} virtual stages, stage i "
        f"on pipeline rank i mod {pp}, so {first}/{middle}/{last} layers on the first/middle/last rank, the "
        "embedding on the first and the loss on the last; approximated: the model spreads a rank's layers evenly "
        f"over its {vp} chunks (the first rank's first chunk holds the embedding and 1 layer, the last rank's last "
        f"chunk the loss alone) and times every layer as the mean of the {dense} dense and {model.moe_layers} MoE "
        "layers (the dense ones run on the first two ranks)",
        "distributed optimizer (ZeRO-1), gradient reduce-scatter and parameter all-gather overlapped "
        "(--use-distributed-optimizer --overlap-grad-reduce --overlap-param-gather)",
        _recompute_text(row) + f": the {dense} dense layers' MLP and the routed experts' activation "
        "(--recompute-granularity selective --recompute-modules moe_act mlp)",
        f"{row['dispatcher']} dispatcher (--moe-token-dispatcher-type flex --moe-flex-dispatcher-backend hybridep): "
        f"each token sent once per destination node (ep_dedup); each EP{ep} group inside one NVLink domain (the "
        "reproduce guide places 32 GPUs, 8 nodes, in each rack)",
        "EP all-to-alls not overlapped (no --overlap-moe-expert-parallel-comm; the guide, section 3.2: the 1F1B "
        "all-to-all overlap was not used on GB200)",
        "force-balanced routing (the command's --moe-router-force-load-balancing): routing Gini 0",
        "MXFP8 (--fp8-recipe mxfp8) modelled as fp8: fp8 parameters (--fp8-param-gather), bf16 Adam moments, fp32 "
        "main gradients and master weights (--use-precision-aware-optimizer --main-grads-dtype fp32 "
        f"--main-params-dtype fp32 --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16); TP{tp}: no TP communication",
        "fused cross-entropy on bf16 logits (--cross-entropy-loss-fusion --cross-entropy-fusion-impl te)",
        "no multi-token prediction (no --mtp-num-layers in the command, no 'm' in the layout)",
        metric_note,
        "attention: cuDNN fused attention via Transformer Engine (NVTE_FUSED_ATTN=1 or TE's default)",
        f"not modelled: {row['not_modelled']}",
    )


def _plan(row: dict[str, str], model: Model, dp: int) -> Plan:
    tp, pp, cp = int(row["tp"]), int(row["pp"]), int(row["cp"])
    fp8 = row["precision"] == "fp8"
    recompute: dict[str, object] = {"recompute": row["recompute"]}
    if row["recompute"] == "selective":
        recompute["recompute_modules"] = tuple(row["recompute_modules"].split(";"))
    return Plan(tp=tp, pp=pp, vp=int(row["vpp"]), cp=cp, dp=dp, ep=int(row["ep"]), etp=int(row["etp"]),
                ep_dedup=row["dispatcher"] in ("DeepEP", "HybridEP"),
                offload_modules=tuple(m for m in row["offload_modules"].split(";") if m),
                routing_gini=0.0, micro_batch=int(row["mbs"]), global_batch=int(row["gbs"]),
                seq_len=int(row["seq_len"]), sp=tp > 1, zero=3 if row["fsdp"] == "On" else 1,
                precision=row["precision"], fp8_params=fp8, optimizer_moments="bf16" if fp8 else "fp32",
                grad_reduce="fp32", overlap_dp=True, overlap_tp=not fp8, fused_cross_entropy=True,
                attention_kernel="cudnn",  # NVTE_FUSED_ATTN=1 / TE's default (docs/attention-kernels.md)
                **recompute, **row_stage_layers(row, model.layers))


def megatron_moe_modelzoo() -> list[Case]:
    """Every row of the Qwen3 readme's four tables and the DeepSeek-V3 GB200 guide's final row:
    step time where printed, else tokens/s per GPU from the printed TFLOP/s; Qwen3-Next-80B-A3B
    listed as not modelled."""
    out = _Builder(TABLE)
    for row in _rows(TABLE):
        label, source = _label(row), f"{row['source']}; plan: {row['plan_source']}"
        if not row["model"]:
            out.skip(label, "step_time_s", float(row["step_time_s"]), SKIP_HYBRID, source)
            continue
        model = load_model(row["model"])
        gpus, tp, pp, cp = (int(row[k]) for k in ("gpus", "tp", "pp", "cp"))
        dp = gpus // (tp * pp * cp)
        seq, tflops = int(row["seq_len"]), float(row["tflops_per_gpu"])
        if row["step_time_s"]:
            metric, published = "step_time_s", float(row["step_time_s"])
            note = f"step time as printed ({tflops:g} TFLOP/s per GPU printed beside it)"
            fields = RECIPE_FIELDS
        else:
            # Tokens/s per GPU of a row that prints only Megatron's model TFLOP/s per GPU.
            divisible_by = int(row["vocab_divisible_by"])
            flops = megatron_flops_per_token(model, seq, tp, divisible_by)
            metric, published = "tokens_per_s_per_chip", tflops * 1e12 / flops
            counted = ""
            if row["source"].startswith(GUIDE):
                vocab = padded_vocab(model.vocab_size, tp, divisible_by)
                counted = (f" at {GUIDE_CODE}, the reproduce guide's code: multi-latent attention, "
                           f"{model.dense_ffn_layers} dense and {model.moe_layers} MoE layers, LM head over the "
                           f"{vocab:,}-entry padded vocabulary (--make-vocab-size-divisible-by {divisible_by}), no MTP")
            note = (f"tokens/s per GPU = the printed {tflops:g} TFLOP/s over Megatron's {flops / 1e9:.1f} GFLOP per "
                    f"token at sequence {seq:,} (num_floating_point_operations{counted})")
            fields = RECIPE_FIELDS + COMMAND_FIELDS
        guide_row = row["source"].startswith(GUIDE)
        assumptions = (_guide_assumptions if guide_row else _assumptions)(row, model, dp, note)

        def build(row: dict[str, str] = row, model: Model = model, dp: int = dp) -> tuple[Model, System, Plan]:
            return model, load_system(row["system"]), _plan(row, model, dp)

        out.add(label, metric, published, build, assumptions, source, recipe_fields=fields)
    return out.cases
