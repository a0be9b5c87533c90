"""Turn each published row into a case: a model, a system, the row's own plan, and the metric.

Each table adapter reads its CSV (shipped in ``tables/``, with the source column kept) and
returns one :class:`Case` per row. A row clusterplan cannot model yet comes back with a
``skip`` reason instead of being dropped; assumptions a row needs (a micro-batch size the
source does not print, say) are written into the case's ``assumptions`` and shown in the report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from itertools import pairwise

from clusterplan.catalog import load_chip, load_model, load_system
from clusterplan.errors import SpecError
from clusterplan.specs import Chip, FabricTier, Model, Plan, System
from clusterplan.specs.plan import balanced_layer_split
from clusterplan.validation.case import ATTENTION_TEXT, METRICS, Case, _Builder, _rows, higher_is_faster

__all__ = ["METRICS", "Case", "_Builder", "_rows", "higher_is_faster"]

def _gpt(name: str, layers: int, hidden: int, heads: int, vocab: int, source: str) -> Model:
    """A Megatron GPT of the 2021-22 papers: MHA, GeLU 4h FFN, dropout, untied output layer
    (Megatron GPT ties embeddings; the papers' parameter formula counts one V*h matrix)."""
    return Model(name=name, layers=layers, hidden_size=hidden, ffn_hidden_size=4 * hidden,
                 attention_heads=heads, kv_heads=heads, vocab_size=vocab, ffn_activation="gelu",
                 tied_embeddings=True, dropout=True, source=source)


#: SC'21 Table 1 does not print the model chunks per pipeline stage; non-interleaved (1) is
#: the table-wide assumption (see docs/validation.md for the alternative).
SC21_VIRTUAL_STAGES = 1


# ---- Megatron SC'21 -----------------------------------------------------------------------
def megatron_sc21() -> list[Case]:
    """Narayanan et al. 2021 Table 1: TFLOP/s per GPU counted with F = 96*B*s*l*h^2*
    (1 + s/6h + V/16lh) (recompute included) -> published step time = F / (TFLOP/s * GPUs)."""
    out = _Builder("megatron_sc21")
    system = load_system("dgx-a100")
    for row in _rows("megatron_sc21"):
        h, layers, heads = int(row["hidden_size"]), int(row["num_layers"]), int(row["attention_heads"])
        s, vocab, batch = int(row["seq_len_tokens"]), int(row["vocab_size"]), int(row["global_batch_size_seqs"])
        gpus, tp, pp = int(row["num_gpus"]), int(row["tensor_parallel"]), int(row["pipeline_parallel"])
        flops = 96 * batch * s * layers * h * h * (1 + s / (6 * h) + vocab / (16 * layers * h))
        step = flops / (float(row["achieved_tflops_per_gpu"]) * 1e12 * gpus)
        vp = SC21_VIRTUAL_STAGES
        assumptions = (
            "micro-batch 1 (not printed)",
            f"vp={vp}: chunks per stage not printed (docs/validation.md gives the MAPE with vp=2/3)"
            if pp > 1 else "",
            "full recompute, no SP, no flash attention; fp16 mixed precision: 16-bit gradient "
            "all-reduce, not overlapped",
        )

        def build(h: int = h, layers: int = layers, heads: int = heads, vocab: int = vocab,
                  tp: int = tp, pp: int = pp, vp: int = vp, gpus: int = gpus, batch: int = batch,
                  s: int = s, row: dict[str, str] = row) -> tuple[Model, System, Plan]:
            model = _gpt(f"GPT {row['model_params_billion']}B", layers, h, heads, vocab, row["source"])
            plan = Plan(tp=tp, pp=pp, vp=vp, dp=gpus // (tp * pp), micro_batch=1, global_batch=batch,
                        seq_len=s, recompute="full", sp=False, zero=0, overlap_dp=False,
                        flash_attention=False, grad_reduce="bf16", overlap_pp=False)
            return model, system, plan

        out.add(f"GPT {row['model_params_billion']}B, {gpus} GPUs (TP{tp} PP{pp})", "step_time_s", step,
                build, tuple(a for a in assumptions if a), row["source"])
    return out.cases


# ---- Korthikanti et al. 2022 ----------------------------------------------------------------
def korthikanti2022() -> list[Case]:
    """Table 5 iteration times: full recompute (no SP) and SP + selective recompute."""
    out = _Builder("korthikanti2022")
    system = load_system("dgx-a100")
    for row in _rows("korthikanti2022"):
        h, layers, heads = int(row["hidden_size"]), int(row["num_layers"]), int(row["attention_heads"])
        tp, pp, dp = int(row["tensor_parallel"]), int(row["pipeline_parallel"]), int(row["data_parallel"])
        vp = int(row["interleave_stages_m"] or 1)
        settings = (("full", False, row["iter_time_full_recompute_s"]),
                    ("selective", True, row["iter_time_seqpar_selective_s"]))
        for recompute, sp, published in settings:
            if not published:
                continue

            def build(h: int = h, layers: int = layers, heads: int = heads, tp: int = tp, pp: int = pp,
                      dp: int = dp, vp: int = vp, recompute: str = recompute, sp: bool = sp,
                      row: dict[str, str] = row) -> tuple[Model, System, Plan]:
                model = _gpt(row["model"], layers, h, heads, int(row["vocab_size"]), row["source"])
                plan = Plan(tp=tp, pp=pp, vp=vp, dp=dp, micro_batch=int(row["micro_batch_size"]),
                            global_batch=int(row["global_batch_size_seqs"]),
                            seq_len=int(row["seq_len_tokens"]), recompute=recompute,
                            sp=sp, zero=0, overlap_dp=False, flash_attention=False,
                            overlap_pp=False, grad_reduce="bf16")  # fp16 runs: 16-bit gradients
                return model, system, plan

            label = f"{row['model']} {row['num_gpus']} GPUs, {'SP+selective' if sp else 'full recompute'}"
            out.add(label, "step_time_s", float(published), build,
                    ("no flash attention (2022 Megatron fused softmax)", "DP all-reduce not overlapped (paper)"),
                    row["source"])
    return out.cases


# ---- Megatron-Core on H100 (2024) -----------------------------------------------------------
def megatron_core_h100_2024() -> list[Case]:
    """Weak-scaling TFLOP/s per GPU (Megatron's model-FLOP count, no recompute) -> step time."""
    from clusterplan.training.flops import model_flops_per_token

    out = _Builder("megatron_core_h100_2024")
    system = load_system("dgx-h100")
    for row in _rows("megatron_core_h100_2024"):
        size = row["model_size"].removesuffix("B")
        tp, pp, dp = int(row["tensor_parallel"]), int(row["pipeline_parallel"]), int(row["data_parallel"])
        gpus, batch, s = int(row["num_gpus"]), int(row["global_batch_size_seqs"]), int(row["seq_len_tokens"])
        label = f"GPT {row['model_size']}, {gpus} GPUs (TP{tp} PP{pp} DP{dp})"
        try:
            model = load_model(f"megatron-core-gpt-{size.lower()}b")
        except SpecError as error:
            out.skip(label, "step_time_s", math.nan, str(error), row["source"])
            continue
        flops = float(model_flops_per_token(model, s)) * batch * s
        step = flops / (float(row["achieved_tflops_per_gpu"]) * 1e12 * gpus)

        def build(model: Model = model, tp: int = tp, pp: int = pp, dp: int = dp, batch: int = batch,
                  s: int = s) -> tuple[Model, System, Plan]:
            plan = Plan(tp=tp, pp=pp, dp=dp, micro_batch=1, global_batch=batch, seq_len=s,
                        recompute="none", sp=True, zero=1, overlap_dp=True, overlap_tp=True,
                        grad_reduce="fp32",  # Megatron-LM reduces bf16 runs in fp32
                        attention_kernel="cudnn")
            return model, system, plan

        out.add(label, "step_time_s", step, build,
                ("micro-batch 1, no interleaving, no recompute (not printed)",
                 "TP/DP overlap on, distributed optimizer (README flags)",
                 "attention: cuDNN via Transformer Engine (mid-2024 containers, TE 1.6-1.7, prefer it on Hopper; "
                 "inferred, docs/attention-kernels.md)"), row["source"])
    return out.cases


# ---- NVIDIA NeMo / Megatron-Bridge ---------------------------------------------------------
_NEMO_SYSTEMS = {"DGX-H100": "dgx-h100", "DGX-B200": "dgx-b200", "DGX-B300": "dgx-b300",
                 "DGX-GB200": "gb200-nvl72", "DGX-GB300": "gb300-nvl72"}
_MOE_HINTS = ("qwen3", "gpt oss", "deepseek", "nemotron_3_nano", "mixtral", "kimi")
#: Selective recompute that a row's recipe sets and the tables do not print (model, system) ->
#: Megatron --recompute-modules. Rows not listed run without recompute (the recipes' default).
#: GPT-OSS H100: GPT_OSS_120B_PRETRAIN_CONFIG_H100_BF16_V1 (V2 = V1 at GBS 1280) in
#: Megatron-Bridge scripts/performance/configs/gpt_oss/gpt_oss_workload_base_configs.py at
#: ec5e8c3b0 (2026-04-20, the 26.04 release), kept by the later flat perf_recipes/gpt_oss/h100.
#: Nemotron-4 340B (NeMo 24.07): ``activations_checkpoint_granularity: selective`` (Megatron's
#: core-attention recompute) in NeMo-Framework-Launcher launcher_scripts/conf/training/nemotron/
#: nemotron_340b.yaml at 26e42fa9, the only 24.07 dense config that sets it (the GPT-3, Llama 2/3
#: and Nemotron 8B/22B configs leave it null, and the launcher ships no 340B example script).
_NEMO_RECIPE_RECOMPUTE: dict[tuple[str, str], tuple[str, ...]] = {
    ("GPT OSS 120B", "DGX-H100"): ("layernorm", "moe_act"),
    ("Nemotron-340B", "DGX-H100"): ("core_attn",),
}
#: Rows whose recipe leaves the TP communication overlap off (model, system, GPUs): the NeMo
#: 24.07 GPT-3 175B config, whose layout the 128-GPU row prints (TP4 PP8 VP6, micro-batch 1,
#: batch 256), sets ``ub_tp_comm_overlap: False`` (NeMo-Framework-Launcher launcher_scripts/
#: conf/training/gpt3/175b.yaml at 26e42fa9; its H100 fp8 example examples/training/gpt/h100/
#: 175b_fp8_16node.sh does not override it), while the other 24.07 configs with TP > 1 (GPT-3
#: 20B, Llama 2/3 70B, Nemotron 8B/22B/340B) set it True. The 512-GPU GPT-3 row (micro-batch 2,
#: batch 2048) links its figure to NVIDIA's MLPerf submission, whose recipe overlaps TP
#: (mlperf_training's TP_COMM_OVERLAP); the Megatron-Bridge recipes overlap it wherever TP > 1.
_NEMO_RECIPE_NO_TP_OVERLAP: frozenset[tuple[str, str, int]] = frozenset({("GPT3-175B", "DGX-H100", 128)})
#: Activation offloading a row's recipe sets (model, system, precision as printed) -> layers whose
#: activations go to host memory (Megatron --cpu-offloading-num-layers, weights stay): the FSDP
#: Llama 3 70B FP8 current-scaling presets LLAMA3_70B_PRETRAIN_CONFIG_GB200_FP8_CS_V1 (40) and
#: _GB300_FP8_CS_V1 (20) in Megatron-Bridge scripts/performance/configs/llama/
#: llama3_workload_base_configs.py at ec5e8c3b0 (26.04), unchanged in the flat
#: perf_recipes/llama/gb200|gb300/llama3.py at 067f987df0.
_NEMO_RECIPE_OFFLOAD: dict[tuple[str, str, str], int] = {
    ("LLAMA3_70B", "DGX-GB200", "FP8"): 40,
    ("LLAMA3_70B", "DGX-GB300", "FP8"): 20,
}
#: The NeMo performance recipes reduce (and keep) gradients in bf16: Megatron-Bridge's perf
#: configs set ``grad_reduce_in_fp32 = False`` for every model (scripts/performance/configs/*/
#: *_llm_pretrain.py at ec5e8c3b0; perf_recipes/_common.py _benchmark_common at 067f987df0),
#: NeMo 2's scripts/performance/llm pretrain scripts do the same, and the 24.07 launcher runs
#: pass ``optim.grad_sync_dtype=bf16`` (NeMo-Framework-Launcher examples/training/{gpt,llama}/
#: h100/*_fp8.sh; conf/training/nemotron/*.yaml).
_NEMO_GRAD_REDUCE = "bf16"
#: From NeMo 26 (Megatron-Bridge) the fp8 recipes keep fp8 parameters: bf16_with_fp8_current_
#: scaling_mixed, bf16_with_fp8_delayed_scaling_mixed and bf16_with_mxfp8_mixed set
#: ``fp8_param_gather = True`` (src/megatron/bridge/training/mixed_precision.py at ec5e8c3b0);
#: NVFP4 does not (fp8_param_gather = False).
_NEMO_FP8_PARAMS_FROM = (26,)
#: The same releases fuse the cross-entropy into Transformer Engine's kernel: the pretraining
#: recipes set ``cross_entropy_loss_fusion = True`` (src/megatron/bridge/recipes/llama/llama3.py)
#: and the perf overrides ``cross_entropy_fusion_impl = "te"`` (scripts/performance/utils/
#: overrides.py _set_common_perf_overrides at ec5e8c3b0; perf_recipes/_common.py at 067f987df0).
_NEMO_FUSED_CE_FROM = (26,)
#: The memory settings above, the TP communication overlap (``tp_comm_overlap``) and the MoE rows'
#: force-balanced routing come from the recipes and the tables' notes, not from the tables'
#: columns: a user who types a row's printed plan gets the CLI's defaults for them (validate's
#: fits and errors at defaults).
_NEMO_RECIPE_FIELDS = ("grad_reduce", "fp8_params", "fused_cross_entropy", "recompute",
                       "recompute_modules", "offload_layers", "overlap_tp", "routing_gini", "ep_dedup",
                       "attention_kernel")
#: NeMo's Framework Launcher set NVTE_FUSED_ATTN=0 up to 24.07 (launcher_scripts/conf/config.yaml,
#: removed in 04b8d098 "enable fused attention", 2024-08-29), so Transformer Engine ran
#: flash-attn 2; the GPT-3 175B example alone re-enabled cuDNN (95c77b59,
#: examples/training/gpt/h100/175b_fp8_16node.sh). Later releases and
#: Megatron-Bridge leave TE's default, cuDNN on Hopper and Blackwell (docs/attention-kernels.md).
_NEMO_CUDNN_FROM = (24, 9)


def _nemo_attention_kernel(model: str, container: str) -> str:
    """The fused-attention library of a NeMo performance row (``_NEMO_CUDNN_FROM``)."""
    if _version(container) < _NEMO_CUDNN_FROM and "gpt3-175b" not in model.lower():
        return "flash2"
    return "cudnn"
#: Optimisations a row's recipe turns on that the estimate does not credit, stated with the row
#: so its error is read correctly: the fitted MoE parameters absorb them. Megatron-Bridge
#: scripts/performance/configs/qwen/qwen3_workload_base_configs.py at v0.5.0 (2026-06-16; the
#: same settings at 067f987df0 for 26.08) and at ec5e8c3b0 (26.04) for the H100 235B row.
_BLACKWELL_MXFP8_RECIPE = ("recipe runs FP8 attention, fused grouped-MLP kernels and full-iteration CUDA graphs: "
                           "not credited")
_NEMO_RECIPE_UNMODELLED: dict[tuple[str, str], str] = {
    ("Qwen3_30B_a3B", "DGX-GB300"): _BLACKWELL_MXFP8_RECIPE,
    ("Qwen3_30B_a3B", "DGX-GB200"): _BLACKWELL_MXFP8_RECIPE,
    ("Qwen3_30B_a3B", "DGX-B300"): _BLACKWELL_MXFP8_RECIPE,
    ("Qwen3_235B_a22B", "DGX-GB200"): _BLACKWELL_MXFP8_RECIPE,
}
#: How a row's recipe dispatches tokens, (model, system) -> (de-duplicating dispatcher, EP
#: all-to-alls overlapped): ``moe_flex_dispatcher_backend = "hybridep"`` (or DeepEP) sends a
#: token once per destination node (Plan.ep_dedup), ``moe_token_dispatcher_type = "alltoall"``
#: every routed copy; ``moe_a2a_overlap = True`` overlaps the all-to-alls with another
#: micro-batch's compute (Plan.overlap_ep). Megatron-Bridge scripts/performance/configs/qwen/
#: qwen3_workload_base_configs.py (at 01b2977e5: 30B on every system and 235B on GB200 hybridep,
#: 235B on B200 and H100 alltoall, H100 235B moe_a2a_overlap) and the overlap of the Blackwell
#: MXFP8 presets at v0.5.0 / 067f987df0 (26.06, 26.08). Rows not listed: the flat all-to-all, not
#: overlapped (Megatron-Core's defaults). The de-duplicating dispatch is credited (round 9: the
#: Megatron-MoE-ModelZoo DeepEP rows on H100 measure it, docs/moe.md); the overlap is stated with
#: each row and not credited: the model hides all of the all-to-alls behind another micro-batch's
#: compute, where the one published pair that isolates it (ModelZoo Qwen3-235B on 256 H100, the
#: same plan with and without it) gains 11 %, not the model's 24 % (docs/moe.md, "Recipe
#: dispatch").
_NEMO_RECIPE_DISPATCH: dict[tuple[str, str], tuple[bool, bool]] = {
    ("Qwen3_30B_a3B", "DGX-GB300"): (True, True),
    ("Qwen3_30B_a3B", "DGX-GB200"): (True, True),
    ("Qwen3_30B_a3B", "DGX-B300"): (True, True),
    ("Qwen3_30B_a3B", "DGX-B200"): (True, False),
    ("Qwen3_30B_a3B", "DGX-H100"): (True, False),
    ("Qwen3_235B_a22B", "DGX-GB200"): (True, True),
    ("Qwen3_235B_a22B", "DGX-B200"): (False, False),
    ("Qwen3_235B_a22B", "DGX-H100"): (False, True),
}


def _first(value: str) -> str:
    """'64 (0)' -> '64': the value outside parentheses is the headline precision's setting."""
    return value.split("(")[0].strip()


def _nemo_precision(value: str) -> str | None:
    text = _first(value).upper()
    if "FP4" in text:
        return "fp4"
    if "FP8" in text:
        return "fp8"
    if "BF16" in text:
        return "bf16"
    return None


def _int_or(value: str, default: int) -> int:
    text = _first(value)
    return int(text) if re.fullmatch(r"\d+", text) else default


#: A published NeMo result is identified by model, system, scale and precision; when NVIDIA
#: republishes it with a newer container (same or retuned recipe), the newest is the reference
#: for current software and the older ones are superseded.
_NEMO_CONFIG = ("model", "system", "num_gpus")


def _nemo_config(row: dict[str, str]) -> tuple[str, ...]:
    precision = _nemo_precision(row["precision"]) or "?"
    return (*(_first(row[k]) for k in _NEMO_CONFIG), precision)


def _version(container: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", container))


def _newest_by_config(rows: list[dict[str, str]]) -> dict[tuple[str, ...], str]:
    """The newest container that published each model on each system, scale and precision."""
    newest: dict[tuple[str, ...], str] = {}
    for row in rows:
        key = _nemo_config(row)
        if key not in newest or _version(row["nemo_container"]) > _version(newest[key]):
            newest[key] = row["nemo_container"]
    return newest


#: Everything a NeMo row states about its run: two rows that agree on all of these measured
#: the same configuration, so a large difference between them is the software, not the plan.
_NEMO_RUN = ("model", "system", "num_gpus", "precision", "global_batch_size_seqs", "micro_batch_size",
             "seq_len_tokens", "fsdp", "tp", "pp", "cp", "vp", "ep")

#: A later release running an identical configuration this much faster marks a new software
#: stack. Release-to-release noise on identical configurations is a few per cent (Qwen3-30B on
#: GB200 26.06 -> 26.08: -1.9 %; on H100 26.04.01 -> 26.06: -1.5 %), far below this.
STACK_STEP = 1.2


def _nemo_run(row: dict[str, str]) -> tuple[str, ...]:
    """The row's configuration, with the tables' spellings of one setting made equal
    ('' / '0' FSDP, 'n/a' / '1' virtual stages, 'FP8-MX' / 'MXFP8')."""
    defaults = {"fsdp": 0, "tp": 1, "pp": 1, "cp": 1, "vp": 1, "ep": 1}
    values = [str(_int_or(row[k], defaults[k])) if k in defaults else _first(row[k]) for k in _NEMO_RUN]
    values[_NEMO_RUN.index("precision")] = values[_NEMO_RUN.index("precision")].upper().replace("FP8-MX", "MXFP8")
    return tuple(values)


def _family(system: str) -> str:
    return load_chip(load_system(_NEMO_SYSTEMS[system]).chip).family


def stack_epochs(rows: list[dict[str, str]], run: Callable[[dict[str, str]], tuple[str, ...]] | None = None,
                 release: Callable[[dict[str, str]], str] | None = None,
                 version: Callable[[str], tuple[int, ...]] = _version,
                 rate: Callable[[dict[str, str]], float] | None = None,
                 family: Callable[[dict[str, str]], str] | None = None) -> dict[str, tuple[str, str, float]]:
    """Per chip family, the oldest release of its current software stack.

    The release is the newest one that ran some configuration identical to an earlier release's
    at least :data:`STACK_STEP` times faster; the value also names that configuration's model
    and the speed-up, for the skip reason. Rows of the family from before it measure a stack
    that no longer exists, and a model of the hardware cannot match both the old and the new
    number for one configuration. The defaults read the NeMo tables (configuration, container,
    tokens/s per GPU, system); the serving tables pass their own columns.
    """
    run = run or _nemo_run
    release = release or (lambda row: row["nemo_container"])
    rate = rate or (lambda row: float(row["tokens_per_sec_per_gpu"]))
    family = family or (lambda row: _family(row["system"]))
    by_run: dict[tuple[str, ...], list[tuple[tuple[int, ...], str, float, str]]] = {}
    for row in rows:
        name = release(row)
        by_run.setdefault(run(row), []).append((version(name), name, rate(row), family(row)))
    epochs: dict[str, tuple[str, str, float]] = {}
    for key, runs in by_run.items():
        runs.sort()
        for (_, _, older, _), (newer_v, newer, faster, chip_family) in pairwise(runs):
            if faster < STACK_STEP * older:
                continue
            current = epochs.get(chip_family)
            if (current is None or newer_v > version(current[0])
                    or (newer == current[0] and faster / older > current[2])):
                epochs[chip_family] = (newer, key[0], faster / older)
    return epochs


def _nemo(table: str, moe_rows: bool) -> list[Case]:
    out = _Builder(table)
    rows = _rows("nemo_perf")
    newest = _newest_by_config(rows)
    table_rows = [row for row in rows if any(h in row["model"].lower() for h in _MOE_HINTS) == moe_rows]
    epochs = stack_epochs(table_rows)
    for row in rows:
        name = row["model"]
        gpus = int(row["num_gpus"])
        label = f"{name} {row['system']} x{gpus} {_first(row['precision']) or '?'} (NeMo {row['nemo_container']})"
        published = float(row["tokens_per_sec_per_gpu"])
        is_moe = any(hint in name.lower() for hint in _MOE_HINTS)
        if is_moe != moe_rows:
            other = "nemo_perf_moe" if is_moe else "nemo_perf"
            out.skip(label, "tokens_per_s_per_chip", published,
                     f"{'mixture-of-experts' if is_moe else 'dense'} row: validated in the {other} table",
                     row["source"])
            continue
        if "nemotron_3_nano" in name.lower():
            out.skip(label, "tokens_per_s_per_chip", published,
                     "hybrid Mamba-2/attention MoE: state-space layers are not modelled", row["source"])
            continue
        precision = _nemo_precision(row["precision"])
        if precision is None:
            out.skip(label, "tokens_per_s_per_chip", published, "precision not stated in the row", row["source"])
            continue
        latest = newest[_nemo_config(row)]
        if latest != row["nemo_container"]:
            out.skip(label, "tokens_per_s_per_chip", published,
                     f"superseded: NeMo {latest} republished this model, system, scale and precision",
                     row["source"])
            continue
        epoch = epochs.get(_family(row["system"]))
        if epoch is not None and _version(row["nemo_container"]) < _version(epoch[0]):
            release, example, speedup = epoch
            out.skip(label, "tokens_per_s_per_chip", published,
                     f"older software stack: NeMo {release} ran an identical {example} configuration on this "
                     f"chip family {speedup - 1:.0%} faster", row["source"])
            continue
        tp, pp = _int_or(row["tp"], 1), _int_or(row["pp"], 1)
        cp, vp = _int_or(row["cp"], 1), _int_or(row["vp"], 1)
        ep = _int_or(row["ep"], 1)
        fsdp = _int_or(row["fsdp"], 0)
        mb, batch = int(_first(row["micro_batch_size"])), int(row["global_batch_size_seqs"])
        s = int(row["seq_len_tokens"])
        token_drop = "tokendrop" in name.lower()
        recompute_modules = _NEMO_RECIPE_RECOMPUTE.get((name, row["system"]))
        offload = _NEMO_RECIPE_OFFLOAD.get((name, row["system"], _first(row["precision"]).upper()), 0)
        fp8_params = precision == "fp8" and _version(row["nemo_container"])[:1] >= _NEMO_FP8_PARAMS_FROM
        fused_ce = _version(row["nemo_container"])[:1] >= _NEMO_FUSED_CE_FROM
        dispatch = _NEMO_RECIPE_DISPATCH.get((name, row["system"]), (False, False))
        overlap_tp = (name, row["system"], gpus) not in _NEMO_RECIPE_NO_TP_OVERLAP
        kernel = _nemo_attention_kernel(name, row["nemo_container"])

        def build(row: dict[str, str] = row, tp: int = tp, pp: int = pp, cp: int = cp, vp: int = vp,
                  ep: int = ep, fsdp: int = fsdp, mb: int = mb, batch: int = batch, s: int = s,
                  precision: str = precision, gpus: int = gpus,
                  token_drop: bool = token_drop, offload: int = offload, fp8_params: bool = fp8_params,
                  fused_ce: bool = fused_ce, overlap_tp: bool = overlap_tp, dedup: bool = dispatch[0],
                  recompute_modules: tuple[str, ...] | None = recompute_modules,
                  kernel: str = kernel) -> tuple[Model, System, Plan]:
            model = load_model(row["model"].replace("LLAMA", "llama").replace(" (tokendrop)", ""))
            system = load_system(_NEMO_SYSTEMS[row["system"]])
            dp = gpus // (tp * pp * cp)
            split = balanced_layer_split(model.layers, pp)
            uneven = split is not None and split[0] != split[1]
            layers: dict[str, object] = ({"first_stage_layers": split[0], "last_stage_layers": split[2]}
                                         if uneven and split is not None else {})
            moe_settings: dict[str, object] = {}
            if model.moe is not None:
                # Megatron-Bridge MoE benchmarks force-balance the routing (row notes): Gini 0.
                moe_settings = {"ep": ep, "routing_gini": 0.0, "ep_dedup": dedup,
                                "capacity_factor": 1.0 if token_drop else None}
            recompute: dict[str, object] = ({"recompute": "selective", "recompute_modules": recompute_modules}
                                            if recompute_modules else {"recompute": "none"})
            plan = Plan(tp=tp, pp=pp, vp=vp, cp=cp, dp=dp, micro_batch=mb, global_batch=batch,
                        seq_len=s, sp=tp > 1, zero=3 if fsdp > 1 else 1, **recompute,
                        precision=precision, overlap_dp=True, overlap_tp=overlap_tp, grad_reduce=_NEMO_GRAD_REDUCE,
                        fp8_params=fp8_params, offload_layers=offload, fused_cross_entropy=fused_ce,
                        attention_kernel=kernel, **layers, **moe_settings)
            return model, system, plan

        assumptions = [f"selective recompute of {', '.join(recompute_modules)} (the row's recipe)"
                       if recompute_modules else "no recompute (recipes' defaults; not printed)",
                       "TP/DP comm overlap on" if overlap_tp else "DP comm overlap on, TP overlap off (the recipe's)",
                       "bf16 gradient buffer and reduction (recipes' grad_reduce_in_fp32=False)",
                       f"attention: {ATTENTION_TEXT[kernel]} (the release's launcher; docs/attention-kernels.md)"]
        if fp8_params:
            assumptions.append("fp8 parameters (recipe's fp8_param_gather)")
        if fused_ce:
            assumptions.append("fused cross-entropy on bf16 logits (recipe's cross_entropy_fusion_impl='te')")
        if offload:
            assumptions.append(f"activations of {offload} layers offloaded to host (the row's recipe; "
                               "transfer time not modelled)")
        if moe_rows:
            dedup, overlap = dispatch
            assumptions += ["force-balanced routing (row notes): routing Gini 0", "expert TP 1",
                            ("the recipe's HybridEP dispatch: each token sent once per destination unit (ep_dedup)"
                             if dedup else "flat all-to-all of every routed copy (the recipe's alltoall dispatcher)")
                            + (", not overlapped (the recipe's moe_a2a_overlap: stated, not credited)" if overlap
                               else ", not overlapped")]
            if (name, row["system"]) in _NEMO_RECIPE_UNMODELLED:
                assumptions.append(_NEMO_RECIPE_UNMODELLED[(name, row["system"])])
        out.add(label, "tokens_per_s_per_chip", published, build, tuple(assumptions), row["source"],
                recipe_fields=_NEMO_RECIPE_FIELDS)
    return out.cases


def nemo_perf() -> list[Case]:
    """Published training tokens/s per GPU with the row's TP/PP/CP/VP/FSDP settings (dense rows)."""
    return _nemo("nemo_perf", moe_rows=False)


def nemo_perf_moe() -> list[Case]:
    """The mixture-of-experts rows of the same NeMo / Megatron-Bridge tables (EP as printed)."""
    return _nemo("nemo_perf_moe", moe_rows=True)


# ---- MaxText on TPU -------------------------------------------------------------------------
#: MaxText remat policies (src/maxtext/layers/decoders.py, get_remat_policy, at e591f30cbb):
#: 'full' saves nothing but each layer's input; 'minimal' saves the projection outputs and
#: recomputes the attention core and the elementwise ops (selective); 'qkv_proj_offloaded' saves
#: nothing in device memory and offloads the Q/K/V projections to pinned host memory
#: (maxtext_utils.get_save_and_offload_names), so in HBM it keeps what 'full' keeps, and its
#: backward re-runs the forward except those projections (Plan.offload_qkv).
_REMAT = {"full": "full", "minimal": "selective", "qkv_proj_offloaded": "full"}
_REMAT_MODULES: dict[str, tuple[str, ...]] = {"minimal": ("core_attn", "elementwise")}
#: MaxText computes the logits and the loss in ``num_vocab_tiling`` chunks of tokens where the
#: row's script sets it: src/maxtext/configs/tpu/v4/22b.sh and 52b.sh (num_vocab_tiling=8) at
#: e591f30cbb; the v5e/v5p scripts leave the base.yml default of 1.
_MAXTEXT_VOCAB_TILING = {("v4", "22B"): 8, ("v4", "52B"): 8}


def maxtext_tpu() -> list[Case]:
    """Published model TFLOP/s per chip (MaxText's count: 3x forward, full attention, embedding
    matmul), compared with the model TFLOP/s predicted for the row's sharding.

    MaxText shards the activations' embedding dimension over the ``tensor`` mesh axis
    (base.yml logical_axis_rules: ``['activation_embed', ['tensor']]``), so the activations
    between the tensor-parallel matmuls are split over TP as with sequence parallelism."""
    out = _Builder("maxtext_tpu")
    for row in _rows("maxtext_tpu"):
        generation = row["tpu_generation"]
        chips_per_slice = int(row["chips_per_slice_derived"])
        slices = int(row["num_slices"])
        chips = chips_per_slice * slices
        tensor = _int_or(row["ici_tensor"], 1)
        s = int(row["seq_len_tokens"])
        batch = int(row["per_device_batch_size"]) * chips
        label = f"{row['model_label']} on {row['hardware_as_printed']}"
        remat = _REMAT.get(row["remat_policy"], "selective")
        tiles = _MAXTEXT_VOCAB_TILING.get((generation, row["model_label"]), 1)

        def build(row: dict[str, str] = row, generation: str = generation, tensor: int = tensor,
                  chips: int = chips, chips_per_slice: int = chips_per_slice, s: int = s,
                  batch: int = batch, remat: str = remat, tiles: int = tiles) -> tuple[Model, System, Plan]:
            model = Model(
                name=f"maxtext-{row['model_label']}", layers=int(row["num_layers_derived"]),
                hidden_size=int(row["emb_dim_derived"]), ffn_hidden_size=int(row["mlp_dim_derived"]),
                attention_heads=int(row["num_query_heads_derived"]),
                kv_heads=int(row["num_kv_heads_derived"]), head_dim=int(row["head_dim"]),
                vocab_size=int(row["vocab_size"]), ffn_activation="swiglu", source=row["source"])
            system = _tpu_slice(f"tpu-{generation}", chips_per_slice)
            per_device = int(row["per_device_batch_size"])
            plan = Plan(tp=tensor, dp=chips // tensor, micro_batch=per_device * tensor,
                        global_batch=batch, seq_len=s, recompute=remat,
                        recompute_modules=_REMAT_MODULES.get(row["remat_policy"], ("core_attn",)),
                        sp=True, zero=3, dp_shard=chips_per_slice // tensor, overlap_dp=True,
                        loss_chunks=tiles, offload_qkv=row["remat_policy"] == "qkv_proj_offloaded",
                        grad_reduce="fp32")  # MaxText keeps and reduces gradients in fp32
            return model, system, plan

        assumptions = ["FSDP (ZeRO-3) inside each ICI slice, data parallel across slices over DCN",
                       f"remat '{row['remat_policy']}' -> {remat}"
                       + (" of the attention core and every elementwise op" if row["remat_policy"] == "minimal"
                          else " less the Q/K/V projections, kept in host memory"
                          if row["remat_policy"] == "qkv_proj_offloaded" else ""),
                       "activations' embedding dimension sharded over TP (MaxText activation_embed rule)",
                       "dims derived by the table from global_parameter_scale (see notes)"]
        if tiles > 1:
            assumptions.append(f"loss in {tiles} token chunks (script's num_vocab_tiling)")
        out.add(label, "model_tflops_per_chip", float(row["tflops_per_chip"]), build, tuple(assumptions),
                row["source"])
    return out.cases


def _tpu_slice(name: str, chips: int) -> System:
    """The catalog TPU system with its ICI tier cut to one slice of ``chips`` (torus dims: the
    most cubic factorisation, as GKE/Cloud TPU slice shapes are)."""
    system = load_system(name)
    ici = system.tiers[0]
    dims = _torus_dims(chips, len(ici.dims))
    tiers = (ici.model_copy(update={"size": chips, "dims": dims}), *system.tiers[1:])
    return system.model_copy(update={"tiers": tiers})


def _torus_dims(chips: int, rank: int) -> tuple[int, ...]:
    dims: list[int] = []
    remaining = chips
    for left in range(rank, 0, -1):
        side = round(remaining ** (1.0 / left))
        while remaining % side:
            side -= 1
        dims.append(side)
        remaining //= side
    return tuple(sorted(dims))


# ---- AWS Neuron on Trainium1 ----------------------------------------------------------------
_NEURON_MODELS = {"llama-3.1-8b": "llama3-8b", "llama31-8b": "llama3-8b", "llama-3.1-70b": "llama3-70b",
                  "llama31-70b": "llama3-70b", "llama2-7b": "llama2-7b", "llama2-13b": "llama2-13b",
                  "llama2-70b": "llama2-70b", "gpt3-175b": "gpt3-175b", "gpt3-23b": "gpt3-23b",
                  "gpt3-46b": "gpt3-46b"}

#: Oldest Neuron SDK whose rows are modelled. The 2.13/2.14 releases (2023) are the first
#: generation of the training stack: the same Llama 2 configurations ran 1.3-1.9x faster per
#: chip from 2.15 on, so those rows describe software that no longer exists. They stay in the
#: report as not modelled, and docs/validation.md gives the MAPE with them included.
OLDEST_NEURON_SDK = (2, 15)

#: NeuronCores per Trainium1 chip (AWS Neuron docs, trainium.rst).
CORES_PER_TRAINIUM1 = 2
#: Core-to-core bandwidth on one Trainium1 chip: the two cores share the chip's HBM, so
#: transfers between them are assumed to run at half the HBM bandwidth each way.
ON_CHIP_SHARE = 0.5


def neuron_core_view(system: System) -> tuple[System, Chip]:
    """The Neuron runtime's view of a trn1 system: every NeuronCore is a device.

    Neuron counts TP, PP and DP ranks in NeuronCores; a core has half the chip's peak, HBM and
    bandwidth. An on-chip tier joins the two cores of a chip; NeuronLink and EFA bandwidth per
    chip are shared by its cores.
    """
    chip = load_chip(system.chip)
    n = CORES_PER_TRAINIUM1
    core = chip.model_copy(update={
        "name": f"{chip.name}-neuroncore", "aliases": (),
        "peak_flops": {k: v / n for k, v in chip.peak_flops.items()},
        "hbm_bytes": chip.hbm_bytes / n, "hbm_bandwidth": chip.hbm_bandwidth / n, "tdp_w": chip.tdp_w / n,
        "notes": "one NeuronCore-v2: half of a Trainium1 chip (validation view)"})
    on_chip = FabricTier(name="on-chip", topology="switch", size=n,
                         bandwidth=chip.hbm_bandwidth * ON_CHIP_SHARE / n, latency_s=1e-6,
                         efficiency=0.8, source="assumption: the two NeuronCores of a chip share its HBM")
    tiers = [on_chip]
    for tier in system.tiers:
        tiers.append(tier.model_copy(update={
            "size": None if tier.size is None else tier.size * n,
            "bandwidth": tier.bandwidth / n}))
    view = system.model_copy(update={"name": f"{system.name}-neuroncores", "chip": core.name,
                                     "chips_per_node": system.chips_per_node * n, "tiers": tuple(tiers)})
    return System.model_validate(view.model_dump()), core


def neuron_trn() -> list[Case]:
    """Published sequences/s on trn1 clusters -> tokens/s per Trainium1 chip.

    Plans are taken exactly as printed, in NeuronCores (see :func:`neuron_core_view`)."""
    out = _Builder("neuron_trn")
    for row in _rows("neuron_trn"):
        name = row["model"].removesuffix(" pre-training")
        instances = int(row["num_instances"])
        cores = instances * int(row["neuroncores_per_instance"])
        label = f"{name} {row['topology_as_printed']} x{instances} (SDK {row['neuron_sdk_version']})"
        seq_text = row["seq_len_tokens"]
        assumptions: list[str] = ["plan in NeuronCores (2 per chip) as printed",
                                  "selective recompute (not printed)"]
        seq = int(seq_text) if seq_text else 2048 if name.startswith("GPT3") else 4096
        if not seq_text:
            assumptions.append(f"sequence length {seq} (not printed; the tutorial's value)")
        throughput = float(row["throughput_seq_per_s"])
        published = throughput * seq / cores * CORES_PER_TRAINIUM1
        if not row["dp_consistent_with_world_size_check"].startswith("yes"):
            check = row["dp_consistent_with_world_size_check"]
            out.skip(label, "tokens_per_s_per_chip", published,
                     f"TP*PP*DP does not multiply to the NeuronCores used ({check})", row["source"])
            continue
        sdk = tuple(int(part) for part in row["neuron_sdk_version"].split(".")[:2])
        if sdk < OLDEST_NEURON_SDK:
            out.skip(label, "tokens_per_s_per_chip", published,
                     f"Neuron SDK {row['neuron_sdk_version']} predates 2.15, the oldest stack modelled "
                     "(first-generation compiler; see docs/validation.md)", row["source"])
            continue
        batch_text = row["global_batch_seqs"]
        if not batch_text:
            assumptions.append("global batch 1024 sequences (not printed; rows of the same tutorials print 1024)")
        batch = int(batch_text) if batch_text else 1024
        tp, pp, dp = int(row["tp"]), int(row["pp"] or 1), int(row["dp"])
        zero = 1 if row["zero1"] == "yes" or "FP32Optimizer" in row["data_type"] else 0
        # "BF16+SR": pure bf16 training with stochastic rounding: 16-bit gradients.
        grad_reduce = "bf16" if "SR" in row["data_type"] else "fp32"
        key = name.lower().replace(" ", "-")
        system, core = neuron_core_view(load_system("trn1n" if instances > 1 else "trn1"))

        def build(key: str = key, tp: int = tp, pp: int = pp, dp: int = dp, batch: int = batch,
                  seq: int = seq, zero: int = zero, system: System = system,
                  grad_reduce: str = grad_reduce) -> tuple[Model, System, Plan]:
            model = load_model(_NEURON_MODELS.get(key, key))
            plan = Plan(tp=tp, pp=pp, dp=dp, micro_batch=1, global_batch=batch, seq_len=seq,
                        recompute="selective", sp=True, zero=zero,
                        overlap_dp=True, grad_reduce=grad_reduce)
            return model, system, plan

        out.add(label, "tokens_per_s_per_chip", published, build, tuple(assumptions), row["source"],
                chip=core, devices_per_chip=CORES_PER_TRAINIUM1)
    return out.cases


def __getattr__(name: str) -> object:
    """The table registry under its old names (``TABLES``, ``known_tables``, ``all_cases``).

    Deliberately a function-local import: the registry (``validation/registry.py``) imports this
    module and every other adapter module, so this module must not import it at load time."""
    if name in ("TABLES", "known_tables", "all_cases"):
        from clusterplan.validation import registry

        return getattr(registry, "TRAINING_TABLES" if name == "TABLES" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
