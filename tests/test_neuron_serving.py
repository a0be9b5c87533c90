"""AWS's Trainium1 serving benchmarks as a validation table (validation/inference_neuron.py)."""

from __future__ import annotations

import pytest

from clusterplan.catalog import load_efficiency
from clusterplan.validation.calibrate import INFERENCE_TABLES, VALIDATION_ONLY_TABLES, stage_of
from clusterplan.validation.inference_neuron import TABLE, _rows, neuron_trn1_serving, replica
from clusterplan.validation.registry import all_cases


def test_every_published_configuration_is_two_cases_modelled_or_told_why_not() -> None:
    rows = _rows()
    cases = neuron_trn1_serving()
    assert len(rows) == 36 and len(cases) == 72
    skipped = {c.label.split()[0]: c.skip for c in cases if c.skip}
    # int8-stored Llama 3 8B (bf16 matmuls), Mistral 7B (no catalog model), 13B models (40 heads over
    # 16 chips): each told why
    assert all("int8 weight storage" in (skipped[r["row_id"]] or "") for r in rows if r["model"] == "Llama-3-8B")
    assert all("no catalog model" in (skipped[r["row_id"]] or "") for r in rows if r["model"].startswith("Mistral"))
    assert all("attention_heads=40" in (skipped[r["row_id"]] or "") for r in rows if "13b" in r["model"])
    modelled = [c for c in cases if c.skip is None]
    assert len(modelled) == 40
    assert {c.family for c in modelled} == {"trainium1"}
    assert all(c.table == TABLE and stage_of(c) == "serving" for c in modelled)
    assert TABLE in INFERENCE_TABLES and TABLE in VALIDATION_ONLY_TABLES
    assert {c.label for c in all_cases([TABLE])} == {c.label for c in cases}


def test_a_row_runs_on_sixteen_chips_with_its_batch_and_bf16_weights() -> None:
    row = next(r for r in _rows() if r["row_id"] == "NT1-T13")  # Llama 2 70B, batch 4, 1024/1024
    served = replica(row, load_efficiency("trainium1"))
    assert served.deployment.tp == 16 and served.deployment.chips == 16  # TP 32 NeuronCores
    assert served.deployment.max_batch == 4 and served.deployment.weights == "bf16"
    assert served.deployment.stack == "neuron"
    case = next(c for c in neuron_trn1_serving() if c.label.startswith("NT1-T13") and c.metric == "tpot_s")
    assert case.predict is not None
    assert case.predict(load_efficiency("trainium1")) == pytest.approx(float(served.decode_time(4, 4 * 1536)))


def test_a_static_batch_prefills_its_prompts_together() -> None:
    """One sequence: the single-request TTFT. Four: four prompts' tokens and causal pairs in one
    step, so more than one prompt's time and less than four separate prefills (the fixed step
    cost and the request latency are paid once)."""
    row = next(r for r in _rows() if r["row_id"] == "NT1-L13")
    served = replica(row, load_efficiency("trainium1"))
    one = float(served.static_batch_ttft(1, 1024))
    assert one == pytest.approx(float(served.single_request_ttft(1024)))
    four = float(served.static_batch_ttft(4, 1024))
    assert one < four < 4 * one
    separate = 4 * float(served.prefill_time(1024, 0)) + served.request_latency_s
    assert four < separate
