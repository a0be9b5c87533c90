"""PaLM (Chowdhery et al. 2022) Table 3: the model FLOPs utilisation of four large training runs.

Only the PaLM 540B row prints enough to rebuild its run: 6,144 TPU v4 chips in two pods of 3,072,
12-way model parallelism x 256-way fully sharded data parallelism inside each pod, two-way data
parallelism across the pods over the data-centre network, batch 2,048 x 2,048 tokens, and a
measured 238.3K tokens/s (section 4 and Table 3). That rate is compared as tokens/s per chip
(238.3e3 / 6,144 = 38.79). The other rows are kept as not modelled, with the reason:
GPT-3 prints no chip count, Gopher ran on TPU v3 (not in the catalog), and MT-NLG's 65.43K
tokens/s is the same measurement as the 280-node row of ``mtnlg_2022`` (Smith et al.'s step
time), which is not counted twice.
"""

from __future__ import annotations

from clusterplan.catalog import load_model
from clusterplan.specs import Model, Plan, System
from clusterplan.validation.cases import Case, _Builder, _rows, _tpu_slice

PALM_PODS = 2
PALM_CHIPS_PER_POD = 3072
PALM_MODEL_PARALLEL = 12
#: Table 3's 238.3K tokens/s ("average training throughput", section 4 text).
PALM_TOKENS_PER_S = 238.3e3


def _skip_reason(model: str, accelerator: str, chips: str) -> str | None:
    if model == "PaLM":
        return None
    if not chips:
        return "chip count not printed (Table 3 quotes OpenAI's rate via Patterson et al.)"
    if accelerator == "TPU v3":
        return "TPU v3 is not in the catalog (and Gopher's layout is only 'pipelining over four pods')"
    if model == "Megatron-Turing NLG":
        return ("the same measurement as mtnlg_2022's 280-node row (PaLM derives 65.43K tokens/s from "
                "Smith et al.'s step time): counted once, there")
    return f"{model}: layout not printed"


def palm_table3() -> list[Case]:
    out = _Builder("palm_table3")
    for row in _rows("palm_table3"):
        name, chips = row["model"], row["num_chips"]
        label = f"{name} {row['params_billion']}B on {chips or '?'} x {row['accelerator']}"
        mfu = float(row["mfu_pct_with_self_attention"])
        reason = _skip_reason(name, row["accelerator"], chips)
        if reason is not None:
            out.skip(label, "tokens_per_s_per_chip", float("nan"), f"{reason} (MFU {mfu:g} %)", row["source"])
            continue
        n = int(chips)
        published = PALM_TOKENS_PER_S / n
        batch, seq = int(row["global_batch_size_seqs"]), int(row["seq_len_tokens"])
        dp = n // PALM_MODEL_PARALLEL

        def build(batch: int = batch, seq: int = seq, dp: int = dp) -> tuple[Model, System, Plan]:
            system = _tpu_slice("tpu-v4", PALM_CHIPS_PER_POD)
            plan = Plan(tp=PALM_MODEL_PARALLEL, dp=dp, micro_batch=batch // dp, global_batch=batch, seq_len=seq,
                        recompute="full", sp=True, zero=3, dp_shard=PALM_CHIPS_PER_POD // PALM_MODEL_PARALLEL,
                        overlap_dp=True, grad_reduce="fp32")  # JAX/Pax: fp32 gradients
            return load_model("palm-540b"), system, plan

        out.add(label, "tokens_per_s_per_chip", published, build,
                (f"tokens/s per chip = 238.3K / {n}",
                 "12-way model parallelism taken as TP 12 with activations sharded over it (2D finalized "
                 "layout); FSDP (ZeRO-3) over the 256 replicas of a pod, two pods data-parallel over DCN",
                 f"one micro-batch of {batch // dp} sequences per replica (batch {batch} / {dp})",
                 "full rematerialization (HFU/MFU 57.8/46.2 = 1.25: most of the forward recomputed)",
                 "parallel attention + MLP block costed as a serial one (the paper: ~15 % faster at scale)",
                 "2022 Pathways/JAX stack, DCN 50 Gb/s per chip (catalog assumption)"),
                row["source"])
    return out.cases
