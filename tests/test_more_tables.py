"""The tables added for issue 13 item 6: LLM Foundry's MPT FSDP benchmarks, BLOOM-176B, PaLM Table 3,
torchtitan's benchmarks."""

from __future__ import annotations

import csv
from importlib import resources

import pytest

from clusterplan.validation.calibrate import VALIDATION_ONLY_TABLES
from clusterplan.validation.cases import TABLES
from clusterplan.validation.cases_bloom import bloom_176b
from clusterplan.validation.cases_llmfoundry import MPT_SIZES, llmfoundry_mpt, mpt_model
from clusterplan.validation.cases_palm import palm_table3
from clusterplan.validation.cases_torchtitan import torchtitan
from clusterplan.validation.cases_zero3 import sc21_step_time
from clusterplan.validation.harness import mape, run


def _csv(name: str) -> list[dict[str, str]]:
    text = resources.files("clusterplan.validation").joinpath(f"tables/{name}.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def test_llmfoundry_table_loads_and_every_row_is_modelled_or_skipped_with_a_reason() -> None:
    assert "llmfoundry_mpt" in TABLES and "llmfoundry_mpt" in VALIDATION_ONLY_TABLES
    rows, cases = _csv("llmfoundry_mpt"), llmfoundry_mpt()
    assert len(rows) == len(cases) == 216  # every README row comes back
    assert all(row["source"].startswith("mosaicml/llm-foundry") for row in rows)
    modelled = [c for c in cases if c.skip is None]
    assert len(modelled) == 216  # every row: A100 40GB, A100 80GB and H100
    assert {c.family for c in modelled} == {"ampere", "hopper"}
    a100_40 = [c for c in modelled if "a100_40gb" in c.label]
    assert len(a100_40) == 78 and all(c.system is not None and c.system.chip == "a100-40gb" for c in a100_40)
    assert all(c.plan is not None and c.plan.grad_reduce == "bf16" for c in a100_40)  # 'PURE' mixed precision
    for case in modelled:
        assert case.plan is not None and case.assumptions
        assert case.plan.tp == case.plan.pp == 1 and case.plan.zero in (2, 3)
        assert case.plan.micro_batch * case.plan.micro_batches * case.plan.dp == case.plan.global_batch


def test_llmfoundry_row_by_hand() -> None:
    """H100 large-scale table, MPT 70B, seq 2048, 512 GPUs: 515,636 tokens/s / 512 = 1,007 per GPU
    (printed 1007); micro-batch 8 x 1 accumulation x 512 GPUs = 4,096 sequences; FULL_SHARD, activation
    checkpointing, amp_bf16 with Composer's DEFAULT mixed precision (fp32 gradient reduction)."""
    row = next(r for r in _csv("llmfoundry_mpt") if r["model"] == "70b" and r["num_gpus"] == "512")
    assert int(row["throughput_tokens_per_s"]) / 512 == pytest.approx(float(row["tokens_per_s_per_gpu"]), abs=0.5)
    case = next(c for c in llmfoundry_mpt() if c.label.startswith("MPT 70b seq 2048, 512 x h100_80gb"))
    assert case.published == 1007.0 and case.metric == "tokens_per_s_per_chip"
    assert case.system is not None and case.system.name == "dgx-h100"
    plan = case.plan
    assert plan is not None and (plan.dp, plan.micro_batch, plan.global_batch, plan.seq_len) == (512, 8, 4096, 2048)
    assert (plan.zero, plan.recompute, plan.grad_reduce, plan.precision) == (3, "full", "fp32", "bf16")


def test_mpt_models_match_the_printed_parameter_counts() -> None:
    """NumParams as printed = the model + a learned position embedding of seq x d_model (MPT's
    default ``learned_pos_emb``; not a FLOP-relevant weight) + norms, within 0.1 %."""
    rows = _csv("llmfoundry_mpt")
    for size in MPT_SIZES:
        row = next(r for r in rows if r["model"] == size and r["seq_len_tokens"] == "2048")
        model = mpt_model(size)
        expected = model.total_params + 2048 * model.hidden_size
        assert int(row["num_params"]) == pytest.approx(expected, rel=1e-3), size


def test_llmfoundry_score() -> None:
    """Guard at today's value (docs/validation.md): the A100 rows within ~20 %, the H100 rows
    (a 2023 PyTorch stack, 30-45 % MFU) far slower than predicted."""
    results = run(llmfoundry_mpt())
    a100 = [r for r in results if "a100_" in r.case.label and r.error is not None]
    assert mape(a100) < 20.0
    assert mape(results) < 30.0


def test_bloom_rows_by_hand() -> None:
    """End of epoch one: 104.70 s per iteration at GBS 2048 on 384 GPUs; the printed 149.77 TFLOP/s
    is 96*B*s*l*h^2*(1 + s/6h + V/16lh) / (104.70 s x 384) with l=70, h=14336, V=250880. The third
    row's iteration time comes back from its rounded 73 TFLOP/s the same way."""
    flops = 96 * 2048 * 2048 * 70 * 14336**2 * (1 + 2048 / (6 * 14336) + 250880 / (16 * 70 * 14336))
    assert flops / (104.70 * 384 * 1e12) == pytest.approx(149.77, abs=0.02)
    rows, cases = _csv("bloom_176b"), bloom_176b()
    assert "bloom_176b" in TABLES and "bloom_176b" in VALIDATION_ONLY_TABLES
    assert len(rows) == len(cases) == 3 and all(c.skip is None for c in cases)
    for row, case in zip(rows[:2], cases[:2], strict=True):  # printed TFLOP/s agree with the printed times
        batch = int(row["global_batch_size_seqs"])
        tflops = sc21_step_time(batch, 70, 14336, 1.0, 384, vocab=250880) / float(row["iteration_time_s"])
        assert tflops == pytest.approx(float(row["tflops_per_gpu_printed"]), abs=0.02)
        assert case.published == float(row["iteration_time_s"])
    flops_192 = 96 * 192 * 2048 * 70 * 14336**2 * (1 + 2048 / (6 * 14336) + 250880 / (16 * 70 * 14336))
    assert cases[2].published == pytest.approx(flops_192 / (73e12 * 384))
    plan = cases[0].plan
    assert plan is not None and (plan.tp, plan.pp, plan.dp, plan.micro_batch) == (4, 12, 8, 2)
    assert (plan.first_stage_layers, plan.last_stage_layers) == (5, 5)
    system = cases[0].system
    assert system is not None and system.tiers[-1].bandwidth == pytest.approx(4 * 100e9 / 8 / 8)  # 50 Gb/s per GPU
    assert mape(run(cases)) < 35.0


def test_palm_table3_models_only_the_palm_row() -> None:
    """238.3K tokens/s on 6,144 TPU v4 = 38.79 per chip; TP 12 x 512 data-parallel replicas, FSDP
    within each 3,072-chip pod (256 replicas), batch 2,048 = one micro-batch of 4 per replica."""
    cases = palm_table3()
    assert "palm_table3" in TABLES and "palm_table3" in VALIDATION_ONLY_TABLES
    assert len(cases) == len(_csv("palm_table3")) == 4
    modelled = [c for c in cases if c.skip is None]
    assert [c.label for c in modelled] == ["PaLM 540B on 6144 x TPU v4"]
    palm = modelled[0]
    assert palm.published == pytest.approx(238.3e3 / 6144) and palm.published == pytest.approx(38.79, abs=0.01)
    plan = palm.plan
    assert plan is not None and (plan.tp, plan.dp, plan.dp_shard, plan.micro_batch) == (12, 512, 256, 4)
    assert palm.system is not None and palm.system.tiers[0].size == 3072
    reasons = {c.label.split()[0]: c.skip or "" for c in cases if c.skip}
    assert "chip count" in reasons["GPT-3"] and "TPU v3" in reasons["Gopher"]
    assert "mtnlg_2022" in reasons["Megatron-Turing"]
    assert mape(run(cases)) < 15.0


def test_torchtitan_models_the_h200_rows_and_lists_the_grand_teton_rows() -> None:
    """Trainy's 4-node run: 10,938 tokens/s per GPU as printed, FSDP over 32 H200, local batch 2
    (global 64), seq 8192 (llama3_8b.toml), float8 with float8 all-gather."""
    rows, cases = _csv("torchtitan"), torchtitan()
    assert "torchtitan" in TABLES and "torchtitan" in VALIDATION_ONLY_TABLES
    assert len(rows) == len(cases) == 32 and all(row["source"].startswith("pytorch/torchtitan") for row in rows)
    modelled = [c for c in cases if c.skip is None]
    assert len(modelled) == 2 and all(c.system is not None and c.system.name == "dgx-h200" for c in modelled)
    assert all("Grand Teton" in (c.skip or "") for c in cases if c.skip)
    first = modelled[0]
    assert first.published == 10938.0
    plan = first.plan
    assert plan is not None and (plan.dp, plan.micro_batch, plan.global_batch, plan.seq_len) == (32, 2, 64, 8192)
    assert (plan.zero, plan.precision, plan.fp8_params) == (3, "fp8", True)
    assert mape(run(cases)) < 30.0


def _count(text: str) -> float:
    """'3.5M' / '456K' / '1.3M' -> tokens/s."""
    scale = {"K": 1e3, "M": 1e6}[text[-1]]
    return float(text[:-1]) * scale


def test_axlearn_rows_are_the_papers_steps_with_the_repositorys_plans() -> None:
    """AXLearn (arXiv:2507.05411 v3, Table 3): eight AXLearn rows on H100, TPU v5p, Trainium2 and
    B200, validation only. Each row's tokens per step (printed throughput x iteration time) is
    its plan's global batch x sequence (4 Mi tokens for Llama 2, 16 Mi for Qwen3) within the
    two printed digits, and its plan is the repository's mesh rule: ZeRO-3 over ``dp_shard``
    chips, no TP, PP or gradient accumulation."""
    from clusterplan.validation.cases_axlearn import axlearn_2025

    rows, cases = _csv("axlearn_2025"), axlearn_2025()
    assert "axlearn_2025" in TABLES and "axlearn_2025" in VALIDATION_ONLY_TABLES
    assert len(rows) == len(cases) == 8 and all(c.skip is None for c in cases)
    assert {c.family for c in cases} == {"hopper", "tpu-v5p", "trainium2", "blackwell"}
    for row, case in zip(rows, cases, strict=True):
        assert row["source"].startswith("arXiv:2507.05411v3") and "apple/axlearn @ 34aed43c" in row["plan_source"]
        plan = case.plan
        assert plan is not None and case.metric == "step_time_s"
        tokens = _count(row["throughput_tokens_per_s_as_printed"]) * float(row["iteration_time_s"])
        assert tokens == pytest.approx(plan.global_batch * plan.seq_len, rel=0.03)
        assert (plan.tp, plan.pp, plan.zero, plan.micro_batches) == (1, 1, 3, 1)
        assert plan.dp == int(row["chips"]) and plan.dp % (plan.dp_shard or plan.dp) == 0
    trainium2 = [c for c in cases if c.family == "trainium2"]
    assert len(trainium2) == 2 and all(c.system is not None and c.system.name == "trn2" for c in trainium2)
    assert mape(run(cases)) < 27.0


def test_modelzoo_rows_are_the_readmes_qwen3_runs_with_their_commands_plans() -> None:
    """Megatron-MoE-ModelZoo (best_practice/qwen3/readme.md at e865051): 13 Qwen3-235B-A22B rows
    on H100, GB200 and GB300, fitted with the MoE stage; Qwen3-Next listed as not modelled; and
    the DeepSeek-V3 GB200 guide's final row (its own test below). Each plan is the row's columns
    and its command's settings; where the H100 table prints DP, expert DP and gradient
    accumulation the plan derives the same. Megatron's FLOPs per token turn the H100 rows' step
    times into their printed TFLOP/s within 2 %, so the TFLOP/s-only rows' tokens/s are that
    count's inverse."""
    from clusterplan.catalog import load_model
    from clusterplan.validation.cases_modelzoo import GUIDE, REPO, megatron_flops_per_token, megatron_moe_modelzoo

    rows, cases = _csv("megatron_moe_modelzoo"), megatron_moe_modelzoo()
    assert "megatron_moe_modelzoo" in TABLES and "megatron_moe_modelzoo" not in VALIDATION_ONLY_TABLES
    assert len(rows) == len(cases) == 15
    assert [c.label[-6:-1] for c in cases if c.skip] == ["MZ-06"] and "linear-attention" in (cases[5].skip or "")
    assert [row["row_id"] for row in rows if row["source"].startswith(GUIDE)] == ["MZ-15"]
    qwen = load_model("qwen3-235b-a22b")
    # The count as Megatron-LM wrote it at 1e057005 (training.py num_floating_point_operations,
    # GQA branch, per token): 12 l h q (1 + g/n) + 6 l q s (causal core) + 18 l h f k + 6 h V.
    h, q, layers, f, k = 4096, 64 * 128, 94, 1536, 8
    for s in (4096, 131072):
        as_written = 12 * layers * h * q * (1 + 4 / 64) + 6 * layers * q * s + 18 * layers * h * f * k + 6 * h * 151936
        assert megatron_flops_per_token(qwen, s, tp=4) == pytest.approx(as_written, rel=1e-12)
    checked = 0
    for row, case in zip(rows, cases, strict=True):
        assert case.label.endswith(f"({row['row_id']})")
        qwen_row = row["source"].startswith(REPO)
        if qwen_row:
            assert row["source"].startswith(f"{REPO} best_practice/qwen3/readme.md") and "e865051" in row["plan_source"]
        else:
            assert row["source"].startswith(GUIDE) and GUIDE in row["plan_source"]
        assert ", l." in row["source"] and case.source.startswith(row["source"])
        plan = case.plan
        if case.skip is not None:
            continue
        assert plan is not None and case.family in {"hopper", "blackwell"}
        keys = ("tp", "cp", "ep", "pp", "vpp", "etp", "mbs", "gbs", "seq_len")
        assert (plan.tp, plan.cp, plan.ep, plan.pp, plan.vp, plan.etp, plan.micro_batch, plan.global_batch,
                plan.seq_len) == tuple(int(row[key]) for key in keys)
        assert plan.chips == int(row["gpus"]) and plan.routing_gini == 0.0 and plan.sp == (plan.tp > 1)
        assert plan.ep_dedup == (row["dispatcher"] in ("DeepEP", "HybridEP"))
        # The overlap is stated, not credited (docs/moe.md); the de-duplicated dispatch is credited.
        assert not plan.overlap_ep and plan.zero == (3 if row["fsdp"] == "On" else 1)
        assert ("not credited" in " ".join(case.assumptions)) == (row["a2a_overlap"] == "1")
        assert plan.recompute == row["recompute"] and plan.precision == row["precision"]
        assert plan.fp8_params == (plan.precision == "fp8") and plan.grad_reduce == "fp32"
        if plan.recompute == "selective":
            assert ";".join(plan.recompute_modules) == row["recompute_modules"]
        if not qwen_row:
            continue
        assert row["vocab_divisible_by"] == "1187" and not row["pp_layout"]
        if plan.pp > 1:  # the embedding and the loss count as a layer each: 96 layers over PP
            assert plan.first_stage_layers == plan.last_stage_layers == 96 // plan.pp - 1
        if row["dp_as_printed"]:
            assert plan.dp == int(row["dp_as_printed"]) and plan.micro_batches == int(row["ga_as_printed"])
            assert plan.tp * plan.cp * plan.dp // (plan.ep * plan.etp) == int(row["edp_as_printed"])
        flops = megatron_flops_per_token(qwen, plan.seq_len, plan.tp)
        tflops = float(row["tflops_per_gpu"])
        if row["step_time_s"]:
            assert case.metric == "step_time_s" and case.published == float(row["step_time_s"])
            tokens_per_gpu = plan.global_batch * plan.seq_len / (case.published * plan.chips)
            assert tokens_per_gpu * flops / 1e12 == pytest.approx(tflops, rel=0.02)
            checked += 1
        else:
            assert case.metric == "tokens_per_s_per_chip"
            assert case.published * flops == pytest.approx(tflops * 1e12, rel=1e-12)
    assert checked == 5


def test_megatron_flops_per_token_of_deepseek_v3_by_hand() -> None:
    """DeepSeek-V3 as Megatron-LM counts it at effebd81f4 (training.py num_floating_point_operations,
    the multi-latent-attention branch; the command of the GB200 guide's reproduce guide), per token
    at sequence 4,096, TP 1, no MTP. h 7168, 128 heads, q LoRA rank 1536, KV LoRA rank 512, QK head
    dims 128 + 64 (RoPE), V head dim 128; 3 dense layers of FFN 18432, 58 MoE layers of top-8 plus
    1 shared expert of FFN 2048; the vocabulary padded to a multiple of 3232: 40 x 3232 = 129,280
    (DeepSeek-V3's tokenizer has about 128K entries: above 39 x 3232 = 126,048)."""
    from clusterplan.catalog import load_model
    from clusterplan.validation.cases_modelzoo import megatron_flops_per_token

    # Attention, per layer (Megatron's standard_self_attn_term without its 3 x 2):
    q_term = 1536 * (7168 + 128 * (128 + 64) + 1)  # q LoRA down + up, q norm: 48,760,320
    kv_term = 512 * (7168 + 128 * (128 + 128) + 1) + 7168 * 64  # kv LoRA down + up, kv norm, RoPE key: 20,906,496
    o_proj = 128 * 128 * 7168  # 117,440,512
    core = 4096 * 128 * (128 + 64) / 2 + 4096 * 128 * 128 / 2  # causal scores and values: 83,886,080
    attention = q_term + kv_term + o_proj + core
    assert attention == 270_993_408
    # FFN: expansion 12 x h x (ffn x 3/2 x dense share + (moe_ffn x topk + shared) x 3/2 x MoE share), x 61 layers.
    ffn = 12 * 61 * 7168 * (18432 * 1.5 * 3 / 61 + 2048 * 8 * 1.5 * 58 / 61 + 2048 * 1.5 * 58 / 61)
    assert ffn == pytest.approx(6 * 24_178_065_408, rel=1e-12)
    logits = 3 * 2 * 7168 * 129280
    per_token = 6 * 61 * attention + ffn + logits
    assert per_token == pytest.approx(249_812_054_016, rel=1e-12)
    deepseek = load_model("deepseek-v3")
    assert megatron_flops_per_token(deepseek, 4096, tp=1, divisible_by=3232) == pytest.approx(per_token, rel=1e-12)


def test_pipeline_layout_of_the_deepseek_v3_guide() -> None:
    """``Et|(tt|)*30L`` over PP8: 32 virtual stages, stage i on rank i mod 8; rank 0 holds the
    embedding + 1 layer and three 2-layer stages (7), ranks 1-6 four 2-layer stages (8), rank 7
    three 2-layer stages and the loss (6): 7 + 6 x 8 + 6 = 61."""
    from clusterplan.validation.cases_modelzoo import layout_stage_layers, layout_stages

    stages = layout_stages("Et|(tt|)*30L")
    assert stages == ["Et"] + ["tt"] * 30 + ["L"]
    assert layout_stage_layers("Et|(tt|)*30L", 61, 8, 4) == {"first_stage_layers": 7, "last_stage_layers": 6}
    # Megatron's documented example (61 layers + 1 MTP layer, PP16 VPP2) unrolls the same way; MTP is refused.
    assert len(layout_stages("Et*3|(tt|)*29,m|L")) == 32 and layout_stages("Et*3|(tt|)*29,m|L")[0] == "Ettt"
    with pytest.raises(ValueError, match="MTP"):
        layout_stage_layers("Et*3|(tt|)*29,m|L", 61, 16, 2)
    with pytest.raises(ValueError, match="virtual stages"):
        layout_stage_layers("Et|(tt|)*30L", 61, 8, 2)
    with pytest.raises(ValueError, match="even middle"):
        layout_stage_layers("Et|ttt|(tt|)*29L", 61, 8, 4)


def test_modelzoo_deepseek_v3_row_is_the_gb200_guides_final_run() -> None:
    """NVIDIA's DeepSeek-V3 GB200 guide (Megatron-LM @ 79e8592bb7): 970.01 TFLOP/s per GPU on 256
    GB200, MXFP8, HybridEP; the plan of its reproduce guide's launch script: TP1 PP8 VPP4 EP32,
    MBS1 GBS2048 (DP32, 64 micro-batches), seq 4096, selective recompute of mlp and moe_act,
    fp8 parameters, bf16 Adam moments, fp32 main gradients, the layout's 7/8/6 split, no MTP."""
    from clusterplan.validation.cases_modelzoo import megatron_flops_per_token, megatron_moe_modelzoo

    case = next(c for c in megatron_moe_modelzoo() if c.label.endswith("(MZ-15)"))
    assert case.skip is None and case.metric == "tokens_per_s_per_chip" and case.family == "blackwell"
    assert case.model is not None and case.model.name == "deepseek-v3"
    assert case.published == pytest.approx(970.01e12 / 249_812_054_016, rel=1e-12)
    assert case.published == pytest.approx(3883.0, abs=0.5)
    assert case.published * megatron_flops_per_token(case.model, 4096, 1, 3232) == pytest.approx(970.01e12)
    assert case.system is not None and case.system.name == "gb200-nvl72"
    plan = case.plan
    assert plan is not None and plan.chips == 256
    assert (plan.tp, plan.pp, plan.vp, plan.cp, plan.dp, plan.ep, plan.etp) == (1, 8, 4, 1, 32, 32, 1)
    assert (plan.micro_batch, plan.global_batch, plan.micro_batches, plan.seq_len) == (1, 2048, 64, 4096)
    assert (plan.first_stage_layers, plan.last_stage_layers) == (7, 6)
    assert plan.stage_layers(case.model) == (7, 8, 6)
    assert plan.recompute == "selective" and plan.recompute_modules == ("mlp", "moe_act")
    assert (plan.precision, plan.fp8_params, plan.optimizer_moments, plan.grad_reduce) == ("fp8", True, "bf16", "fp32")
    assert plan.ep_dedup and not plan.overlap_ep and plan.routing_gini == 0.0 and plan.mtp == 0
    assert plan.zero == 1 and plan.overlap_dp and plan.fused_cross_entropy
    text = " ".join(case.assumptions)
    for stated in ("Et|(tt|)*30L", "approximated", "no multi-token prediction", "CUDA graphs", "effebd81f4",
                   "249.8 GFLOP", "129,280"):
        assert stated in text, stated
