"""Models as served in 2026 (issue #17 part 4): sliding-window and sink attention (gpt-oss,
Gemma 2/3), interleaved dense/MoE layers (Llama 4) and their Hugging Face configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.cli import app
from clusterplan.errors import SpecError
from clusterplan.inference.serving import simulate
from clusterplan.inference.step import Deployment, ReplicaModel, kv_bytes_per_sequence, kv_bytes_per_token
from clusterplan.inference.workload import Workload, offline
from clusterplan.specs import Model
from clusterplan.specs.plan import Plan
from clusterplan.training import flops as fl
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import _ep_comm_forward


def _changed(model: Model, **update: object) -> Model:
    """A validated copy (``model_copy`` would keep the cached parameter counts)."""
    return Model(**{**model.model_dump(), **update})


def _without_windows(model: Model) -> Model:
    return _changed(model, sliding_window=None, full_attention_every=None)


def _replica(model: Model, **deployment: object) -> ReplicaModel:
    return ReplicaModel(model, hardware_for(load_system("dgx-h100")), Deployment.model_validate(deployment))


# ---- the spec ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "window", "full"), [("gpt-oss-120b", 18, 18), ("gpt-oss-20b", 12, 12),
                                                      ("gemma-2-27b", 23, 23), ("gemma-3-27b", 52, 10)])
def test_window_and_full_layers_follow_the_configs_layer_types(name: str, window: int, full: int) -> None:
    model = load_model(name)
    assert (model.window_layers, model.full_attention_layers) == (window, full)


def test_kv_positions_cap_window_layers_at_the_window() -> None:
    gemma = load_model("gemma-3-27b")  # 52 window layers of 1024, 10 full
    lengths = np.array([1.0, 1024.0, 32768.0])
    expected = (10 * lengths + 52 * np.minimum(lengths, 1024.0)) / 62
    assert np.allclose(gemma.kv_positions(lengths), expected)
    assert np.array_equal(load_model("llama3-8b").kv_positions(lengths), lengths)


@pytest.mark.parametrize(("context", "tokens"), [(0, 50), (0, 4096), (100, 20), (100, 200), (5000, 300)])
def test_attended_pairs_is_the_causal_sum(context: int, tokens: int) -> None:
    model = load_model("gpt-oss-20b")  # window 128
    position = context + np.arange(tokens) + 1.0  # keys of each new query, itself included
    full, window = position.sum(), np.minimum(position, 128.0).sum()
    exact = (12 * full + 12 * window) / 24
    # continuous form: within half a key per query of the discrete sum
    assert model.attended_pairs(context, tokens) == pytest.approx(exact, abs=0.5 * tokens)


def test_sinks_add_one_parameter_per_head_and_layer() -> None:
    model = load_model("gpt-oss-120b")
    assert model.total_params - _changed(model, attention_sinks=False).total_params == 36 * 64


@pytest.mark.parametrize(("yaml_text", "field"), [
    ("full_attention_every: 2\n", "full_attention_every"),
    ("sliding_window: 0\n", "sliding_window"),
    ("sliding_window: 128\nfull_attention_every: 9\n", "full_attention_every"),
    ("moe: {experts: 8, top_k: 2, expert_ffn_hidden_size: 512, layer_interval: 5}\n", "layer_interval"),
])
def test_bad_attention_and_moe_layouts_are_refused(tmp_path: Path, yaml_text: str, field: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nlayers: 4\nhidden_size: 512\nffn_hidden_size: 2048\nattention_heads: 8\n"
                    "kv_heads: 8\nvocab_size: 32000\nffn_activation: swiglu\n" + yaml_text, encoding="utf-8")
    with pytest.raises(SpecError) as refused:
        load_model(str(path))
    assert field in str(refused.value)
    result = CliRunner().invoke(app, ["train", "--model", str(path), "--system", "dgx-h100", "--chips", "8",
                                      "--seq", "4096", "--global-batch", "8"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


# ---- published parameter counts ------------------------------------------------------------------
def test_llama4_counts_match_the_model_card() -> None:
    maverick, scout = load_model("llama4-maverick"), load_model("llama4-scout")
    assert maverick.moe_layers == 24 and scout.moe_layers == 48
    assert maverick.total_params / 1e9 == pytest.approx(400, rel=0.01)
    assert maverick.active_params / 1e9 == pytest.approx(17, rel=0.02)
    # Scout's 109B counts the vision encoder: vision_config of Llama-4-Scout-17B-16E config.json,
    # 34 layers of width 1408 (4 h^2 attention + 2 x 1408 x 5632 FFN)
    vision = 34 * (4 * 1408**2 + 2 * 1408 * 5632)
    assert (scout.total_params + vision) / 1e9 == pytest.approx(109, rel=0.01)
    assert scout.active_params / 1e9 == pytest.approx(17, rel=0.02)


def test_gpt_oss_and_gemma_counts_match_their_reports() -> None:
    assert load_model("gpt-oss-120b").total_params / 1e9 == pytest.approx(116.83, rel=0.01)
    assert load_model("gpt-oss-20b").total_params / 1e9 == pytest.approx(20.91, rel=0.01)
    gemma2, gemma3 = load_model("gemma-2-27b"), load_model("gemma-3-27b")
    assert gemma2.total_params / 1e9 == pytest.approx(1.1806 + 26.0475, rel=0.01)  # arXiv:2408.00118 Table 2
    assert (gemma3.total_params - gemma3.embedding_params) / 1e9 == pytest.approx(25.6, rel=0.01)  # 2503.19786


# ---- FLOPs and memory ------------------------------------------------------------------------
def test_window_layers_attend_to_the_window_in_training_flops() -> None:
    model = load_model("gpt-oss-120b")
    qk, av = fl.attention_core_width(model)
    assert float(fl.attention_core_flops(model, 4096)) == pytest.approx(2 * (4096 + 128) / 2 * (qk + av))
    # a window no shorter than the sequence changes nothing
    wide = _changed(model, sliding_window=8192)
    assert float(fl.model_flops_per_token(wide, 8192)) == pytest.approx(
        float(fl.model_flops_per_token(_without_windows(model), 8192)))
    assert float(fl.model_flops_per_token(model, 8192)) < float(fl.model_flops_per_token(wide, 8192))
    # a causal kernel computes half the full layers' scores and nearly the whole band
    causal = fl.causal_attention_core_flops(model, 4096)
    assert float(causal) == pytest.approx(2 * (4096 / 2 + 128 - 128**2 / 8192) / 2 * (qk + av))


def test_interleaved_moe_layers_count_in_flops_and_active_params() -> None:
    maverick = load_model("llama4-maverick")
    h = maverick.hidden_size
    dense_ffn, expert = 3 * h * 16384, 3 * h * 8192
    per_token_ffn = (24 * 2 * dense_ffn + 24 * (2 * 2 * expert + 2 * h * 128)) / 48
    assert fl.ffn_flops(maverick) == pytest.approx(per_token_ffn)
    every_layer = _changed(maverick, moe={**maverick.model_dump()["moe"], "layer_interval": 1})
    assert every_layer.moe_layers == 48 and every_layer.total_params > 1.9 * maverick.total_params


def test_ep_all_to_all_runs_on_moe_layers_only() -> None:
    maverick = load_model("llama4-maverick")
    every_layer = _changed(maverick, moe={**maverick.model_dump()["moe"], "layer_interval": 1})
    hw = hardware_for(load_system("dgx-h100"))
    batch = PlanBatch.from_plans([Plan(dp=16, ep=16, global_batch=64, seq_len=4096).validate_for(maverick)], maverick)
    assert np.allclose(_ep_comm_forward(maverick, hw, batch) * 2, _ep_comm_forward(every_layer, hw, batch))


# ---- serving -------------------------------------------------------------------------------------
def test_kv_bytes_per_sequence_holds_the_window_on_window_layers() -> None:
    gemma = load_model("gemma-3-27b")
    per_token = kv_bytes_per_token(gemma, "bf16")
    assert float(kv_bytes_per_sequence(gemma, "bf16", 32768)) == pytest.approx(
        per_token * (10 * 32768 + 52 * 1024) / 62)
    assert float(kv_bytes_per_sequence(gemma, "bf16", 512)) == pytest.approx(per_token * 512)


def test_windows_raise_the_batch_and_cut_long_context_decode() -> None:
    gemma = load_model("gemma-3-27b")
    windowed, full = _replica(gemma, tp=2), _replica(_without_windows(gemma), tp=2)
    assert windowed.step_terms() is None and full.step_terms() is not None
    long_w = windowed.offline_throughput(16384, 1024)
    long_f = full.offline_throughput(16384, 1024)
    assert float(long_w["batch"]) > 3 * float(long_f["batch"])
    assert windowed.decode_time(64, 64 * 16384) < 0.8 * full.decode_time(64, 64 * 16384)
    assert windowed.prefill_time(16384, 0) < full.prefill_time(16384, 0)
    # within the window nothing changes
    assert windowed.decode_time(8, 8 * 1000) == pytest.approx(full.decode_time(8, 8 * 1000))
    assert windowed.prefill_time(900, 0) == pytest.approx(full.prefill_time(900, 0))


def test_a_window_model_serves_in_the_simulator() -> None:
    result = CliRunner().invoke(app, ["serve", "--model", "gpt-oss-20b", "--system", "dgx-h100", "--tp", "1",
                                      "--input-tokens", "2048", "--output-tokens", "256", "--rate", "2",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kv_capacity_tokens"] > 0


# ---- sliding-window KV in the simulator (issue #17 leftovers) -------------------------------------
class _Hidden:
    """A step model showing only the protocol's required members (no ``windowed``/``kv_tokens``)."""

    def __init__(self, replica: ReplicaModel) -> None:
        self._r = replica
        self.kv_capacity_tokens = replica.kv_capacity_tokens
        self.max_batch = replica.max_batch
        self.request_latency_s = replica.request_latency_s

    def step_terms(self) -> object:
        return self._r.step_terms()

    def prefill_time(self, tokens: int, context: int) -> float:
        return float(self._r.prefill_time(tokens, context))

    def decode_time(self, batch: int, total_context: int) -> float:
        return float(self._r.decode_time(batch, total_context))

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        return float(self._r.mixed_time(prefill_tokens, prefill_context, batch, total_context))

    def kv_transfer_time(self, tokens: int) -> float:
        return self._r.kv_transfer_time(tokens)


def _crowd(prompt: int, n: int = 40) -> Workload:
    return offline(n, prompt, 8)


def test_a_window_model_holds_more_sequences_in_the_simulator() -> None:
    gemma = load_model("gemma-3-27b")  # 52 window layers of 1024, 10 full
    windowed, full = _replica(gemma, tp=2), _replica(_without_windows(gemma), tp=2)
    assert windowed.kv_capacity_tokens == full.kv_capacity_tokens
    # requests long enough that the KV cache, not max_batch, limits the batch
    prompt = windowed.kv_capacity_tokens // 12
    work = _crowd(prompt)
    w = simulate(windowed, work)
    f = simulate(full, work)
    assert f.stats["max_concurrent_sequences"] <= 12
    assert w.stats["max_concurrent_sequences"] > 3 * f.stats["max_concurrent_sequences"]
    assert w.stats["kv_utilisation_peak"] <= 1.0
    # ... and a request longer than the whole cache at full length still fits with windows
    long = Workload(np.array([0.0]), np.array([2 * full.kv_capacity_tokens]), np.array([2]))
    with pytest.raises(SpecError):
        simulate(full, long)
    assert math.isfinite(simulate(windowed, long).percentile("ttft", 99))


def test_without_windows_the_simulator_takes_the_full_length_path() -> None:
    llama = load_model("llama-3.1-8b")
    replica = _replica(llama)
    assert not replica.windowed
    work = _crowd(replica.kv_capacity_tokens // 12)
    a, b = simulate(replica, work).record(), simulate(_Hidden(replica), work).record()  # type: ignore[arg-type]
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    # a window no shorter than any request reserves exactly the length
    gemma = load_model("gemma-3-27b")
    wide = _replica(_changed(gemma, sliding_window=1 << 20), tp=2)
    assert float(wide.kv_tokens(4097)) == 4097.0
