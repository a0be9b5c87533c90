"""NVIDIA's Megatron-Bridge performance recipes as memory tests: each one ran, so it fits.

Megatron-Bridge ships one pretraining recipe per benchmarked (model, GPU, GPU count, precision)
in ``src/megatron/bridge/perf_recipes`` (NVIDIA-NeMo/Megatron-Bridge at 067f987df0, the 26.08
NeMo release); its performance summary publishes the throughput of these configurations. The
table holds every recipe of a catalog model on a catalog system (Llama 3 8B/70B, Llama 3.1
405B, DeepSeek-V3, Kimi K2, Qwen3 30B-A3B and 235B-A22B, GPT-OSS 20B and 120B on DGX H100,
B200, B300, GB200 and GB300) with the values its launch path resolves: the recipe's own
settings over the base model recipe and Megatron-Bridge's and Megatron-Core's defaults and
launch-time overrides (``scripts/performance/run_script.py`` run dry, every config write
traced). It carries no throughput: the table checks memory only (``validate`` reports its
``fits_fraction``), so it is never fitted and is no duplicate of the performance tables.

What a recipe sets is mapped onto a :class:`~clusterplan.specs.Plan` here, setting by setting
(:func:`recipe_plan`); a recipe whose memory depends on a setting the model cannot express is
listed as not modelled with that setting named. Experimental recipes (``*_dev``) are left out:
they are not benchmark configurations, and three of them fail Megatron's own validation at this
commit.
"""

from __future__ import annotations

import math
import re

from clusterplan.catalog import load_model, load_system
from clusterplan.specs import Model, Plan, System
from clusterplan.specs.plan import balanced_layer_split
from clusterplan.validation.case import Case, _Builder, _rows

TABLE = "megatron_bridge_recipes"

#: Recipe model names -> catalog models (Llama 3.1 405B is the catalog's llama3-405b).
MBRIDGE_MODELS = {"Llama 3 8B": "llama3-8b", "Llama 3 70B": "llama3-70b", "Llama 3.1 405B": "llama3-405b",
                  "DeepSeek-V3": "deepseek-v3", "Kimi K2": "kimi-k2", "Qwen3 30B-A3B": "qwen3-30b-a3b",
                  "Qwen3 235B-A22B": "qwen3-235b-a22b", "GPT-OSS 20B": "gpt-oss-20b", "GPT-OSS 120B": "gpt-oss-120b"}
#: Recipe GPU names -> catalog systems (the DGX and NVL72 systems the recipes are written for).
MBRIDGE_SYSTEMS = {"h100": "dgx-h100", "b200": "dgx-b200", "b300": "dgx-b300", "gb200": "gb200-nvl72",
                   "gb300": "gb300-nvl72"}
#: Recipe precisions (the launch script's --compute_dtype names) -> Plan precision.
MBRIDGE_PRECISIONS = {"bf16": "bf16", "fp8_cs": "fp8", "fp8_mx": "fp8", "fp8_sc": "fp8", "fp8_ds": "fp8",
                      "nvfp4": "fp4"}


def recipe_variant(recipe: str) -> str:
    """The variant a recipe's name gives after its precision (``large_scale``, ``fsdp``,
    ``paged_stash_dev``...; empty for the plain recipe): ``<model>_pretrain_<N>gpu_<gpu>_
    <precision>[_<variant>]_config`` (scripts/performance/utils/utils.py, _recipe_function_name)."""
    match = re.search(r"_(?:bf16|fp8cs|fp8mx|fp8sc|fp8ds|nvfp4)_(.+)_config$", recipe)
    return match.group(1) if match else ""


def layout_stage_layers(layout: str, pp: int) -> list[tuple[int, bool]]:
    """Transformer layers per pipeline rank of a Megatron layer layout, and whether the rank
    holds the multi-token-prediction block.

    Megatron-Core's ``PipelineParallelLayerLayout`` syntax (megatron/core/transformer/
    pipeline_parallel_layer_layout.py, ``parse_str_to_list``): virtual stages separated by
    ``|``; ``E`` the embedding, ``t`` a transformer layer, ``m`` an MTP layer, ``L`` the loss;
    ``x*n`` and ``(...)*n`` repeat; commas are cosmetic. Virtual stage ``v*pp + r`` runs on
    pipeline rank ``r``."""
    text = layout.replace(",", "")
    for pattern in (r"\(([^)]+)\)\*(\d+)", r"(.)\*(\d+)"):
        while re.search(pattern, text):
            text = re.sub(pattern, lambda match: match.group(1) * int(match.group(2)), text)
    stages = text.split("|")
    if len(stages) % pp:
        raise ValueError(f"layout has {len(stages)} stages, not a multiple of pp {pp}")
    ranks = [(0, False)] * pp
    for index, stage in enumerate(stages):
        layers, mtp = ranks[index % pp]
        ranks[index % pp] = (layers + stage.count("t"), mtp or "m" in stage)
    return ranks


def pipeline_split(model: Model, row: dict[str, str]) -> tuple[int | None, int | None]:
    """(first, last) stage layers the recipe gives: its explicit layout, Megatron's embedding-
    and loss-aware split, or (None, None) for the even split; ValueError where the plan cannot
    express it (middle ranks with different layer counts)."""
    pp, vp = int(row["pp"]), int(row["vp"] or 1)
    if row["pipeline_layout"]:
        ranks = layout_stage_layers(row["pipeline_layout"], pp)
        layers = [count for count, _ in ranks]
        if sum(layers) != model.layers:
            raise ValueError(f"layout holds {sum(layers)} layers, the model {model.layers}")
        if len(set(layers[1:-1])) > 1:
            raise ValueError(f"layout gives middle pipeline ranks {sorted(set(layers[1:-1]))} layers")
        return (layers[0], layers[-1]) if pp > 1 and len(set(layers)) > 1 else (None, None)
    if row["account_for_embedding_and_loss"] == "True" and pp > 1:
        split = balanced_layer_split(model.layers, pp, vp)
        if split is None:
            raise ValueError(f"no embedding/loss-aware split of {model.layers} layers over pp {pp} vp {vp}")
        first, _, last = split
        return (first, last) if (first, last) != (split[1], split[1]) else (None, None)
    return None, None


def unmodelled(row: dict[str, str]) -> str | None:
    """The recipe setting that changes memory and that no Plan field expresses (None if none):
    such a recipe is listed as not modelled, the setting named."""
    if row["optimizer"] != "adam":
        return f"optimizer {row['optimizer']} (one moment buffer, not Adam's two)"
    if row["moe_paged_stash"] == "True":
        return "MoE paged stash (moe_paged_stash: routed activations in a paged buffer spilling to host)"
    if row["recompute_granularity"] == "full" and row["recompute_method"] == "block":
        return (f"full recompute of {row['recompute_num_layers']} layers per stage (block method): the plan "
                "recomputes all or none")
    return None


def recipe_plan(model: Model, row: dict[str, str]) -> Plan:
    """The :class:`Plan` of one recipe row, setting by setting."""
    gpus, tp, pp, cp = int(row["num_gpus"]), int(row["tp"]), int(row["pp"]), int(row["cp"])
    dp = gpus // (tp * pp * cp)
    first, last = pipeline_split(model, row)
    granularity = row["recompute_granularity"]
    recompute: dict[str, object] = {"recompute": "none"}
    if granularity == "selective":
        recompute = {"recompute": "selective", "recompute_modules": tuple(row["recompute_modules"].split())}
    elif granularity == "full":
        recompute = {"recompute": "full"}
    moe: dict[str, object] = {}
    if model.moe is not None:
        moe = {"ep": int(row["ep"]), "etp": int(row["etp"] or tp),
               # force-balanced routing in the benchmarks: every expert gets its share
               "routing_gini": 0.0 if row["force_load_balancing"] == "True" else None,
               # the flex dispatcher (HybridEP, DeepEP) sends a token once per destination unit
               "ep_dedup": row["token_dispatcher"] == "flex"}
    precision = MBRIDGE_PRECISIONS[row["precision"]]
    offload_modules = tuple(row["offload_modules"].split())
    return Plan(
        tp=tp, pp=pp, vp=int(row["vp"] or 1), cp=cp, dp=dp, micro_batch=int(row["micro_batch_size"]),
        global_batch=int(row["global_batch_size"]), seq_len=int(row["seq_length"]),
        sp=row["sequence_parallel"] == "True" and tp > 1, precision=precision,
        zero=3 if row["megatron_fsdp"] == "True" else (1 if row["distributed_optimizer"] == "True" else 0),
        fp8_params=precision != "bf16" and (row["fp8_param_gather"] == "True" or row["fp4_param_gather"] == "True"),
        # every recipe reduces gradients in bf16 (perf_recipes/_common.py: grad_reduce_in_fp32=False)
        grad_reduce="bf16",
        optimizer_moments="bf16" if row["exp_avg_dtype"] == "bfloat16" else "fp32",
        fused_cross_entropy=True, mtp=int(row["mtp_num_layers"] or 0),
        offload_layers=int(row["cpu_offloading_num_layers"] or 0), offload_modules=offload_modules,
        first_stage_layers=first, last_stage_layers=last, **recompute, **moe)


def megatron_bridge_recipes() -> list[Case]:
    """One memory test per Megatron-Bridge performance recipe (published value: none)."""
    out = _Builder(TABLE)
    for row in _rows(TABLE):
        variant = recipe_variant(row["recipe"])
        label = (f"{row['model']} {row['gpu']} x{row['num_gpus']} {row['precision']} "
                 f"(TP{row['tp']} PP{row['pp']} VP{row['vp']} CP{row['cp']} EP{row['ep']}, "
                 f"mb {row['micro_batch_size']}){' ' + variant if variant else ''}")
        if variant.endswith("dev"):
            out.skip(label, "step_time_s", math.nan, "experimental (_dev) recipe, not a benchmark configuration",
                     row["source"])
            continue
        reason = unmodelled(row)
        if reason is not None:
            out.skip(label, "step_time_s", math.nan, reason, row["source"])
            continue

        def build(row: dict[str, str] = row) -> tuple[Model, System, Plan]:
            model = load_model(MBRIDGE_MODELS[row["model"]])
            return model, load_system(MBRIDGE_SYSTEMS[row["gpu"]]), recipe_plan(model, row)

        assumptions = (
            "memory test only: the recipe ran, so it fits (no throughput compared)",
            f"the recipe's resolved settings ({row['recipe']}); CUDA-graph memory pools "
            f"({row['cuda_graph_impl'] or 'none'}) not modelled",
        )
        out.add(label, "step_time_s", math.nan, build, assumptions, row["source"])
    return out.cases
