"""The tables added for issue 13 item 6: LLM Foundry's MPT FSDP benchmarks (and the others below)."""

from __future__ import annotations

import csv
from importlib import resources

import pytest

from clusterplan.validation.calibrate import VALIDATION_ONLY_TABLES
from clusterplan.validation.cases import TABLES
from clusterplan.validation.cases_llmfoundry import MPT_SIZES, llmfoundry_mpt, mpt_model
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
    skipped = [c for c in cases if c.skip is not None]
    assert len(modelled) == 138 and len(skipped) == 78
    assert all("a100_40gb" in c.label and "not in the catalog" in (c.skip or "") for c in skipped)
    assert {c.family for c in modelled} == {"ampere", "hopper"}
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
    a100 = [r for r in results if "a100_80gb" in r.case.label and r.error is not None]
    assert mape(a100) < 20.0
    assert mape(results) < 35.0
