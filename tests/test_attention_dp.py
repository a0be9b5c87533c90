"""Attention data parallelism and wide expert parallelism for MoE serving (issue #17 part 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cliutil import run_cli
from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.costs import collectives as coll
from clusterplan.inference.deployments import candidate_deployments
from clusterplan.inference.step import (
    Deployment,
    ReplicaModel,
    expected_max_rank_load,
    routed_expert_bytes,
    weight_bytes,
)
from clusterplan.specs.model import MoE

DSV3 = load_model("deepseek-v3")
H200 = hardware_for(load_system("dgx-h200"))


def replica(**deployment: object) -> ReplicaModel:
    return ReplicaModel(DSV3, H200, Deployment(**deployment))  # type: ignore[arg-type]


def serve_json(capsys: pytest.CaptureFixture[str], *layout: str) -> dict:
    code, out, err = run_cli(capsys, ["serve", "--model", "deepseek-v3", "--system", "dgx-h200", *layout,
                                      "--weights", "fp8", "--offline", "--requests", "200", "--json"])
    assert code == 0, err
    return json.loads(out)


def test_deepseek_v3_attention_dp8_holds_more_kv_than_tp8(capsys: pytest.CaptureFixture[str]) -> None:
    adp = serve_json(capsys, "--attention-dp", "8", "--ep", "8")
    tp8 = serve_json(capsys, "--tp", "8", "--ep", "8")
    assert adp["chips_per_replica"] == tp8["chips_per_replica"] == 8
    # TP replicates the MLA latent on all 8 ranks; attention DP stores each sequence once
    assert adp["kv_capacity_tokens"] > 4 * tp8["kv_capacity_tokens"]
    assert adp["kv_capacity_tokens_per_chip"] > 4 * tp8["kv_capacity_tokens_per_chip"]
    assert adp["kv_capacity_tokens_per_rank"] * 8 == adp["kv_capacity_tokens"]
    assert tp8["kv_capacity_tokens_per_rank"] == tp8["kv_capacity_tokens"]
    # the dispatch/combine is charged with attention DP only (TP's all-reduce combines otherwise)
    assert 0.0 < adp["saturated"]["all_to_all_share_of_decode_step"] < 1.0
    assert tp8["saturated"]["all_to_all_share_of_decode_step"] == 0.0
    assert adp["saturated"]["output_tokens_per_s"] > tp8["saturated"]["output_tokens_per_s"]


def test_attention_weights_replicate_per_rank_and_routed_experts_spread() -> None:
    adp, tp8 = replica(attention_dp=8, ep=8, weights="fp8"), replica(tp=8, ep=8, weights="fp8")
    total, routed = weight_bytes(DSV3, "fp8"), routed_expert_bytes(DSV3, "fp8")
    assert routed == 256 * 3 * 7168 * 2048 * 58  # 58 MoE layers of 256 fp8 experts
    assert adp.weight_bytes_per_chip == pytest.approx(total - routed + routed / 8)
    assert tp8.weight_bytes_per_chip == pytest.approx(total / 8)
    # each rank holds the full latent of its own sequences in what its weights leave
    free = (H200.chip.hbm_bytes - adp.weight_bytes_per_chip - H200.efficiency.reserved_bytes) * 0.9
    assert adp.kv_capacity_tokens == int(free / adp.kv_per_token)
    assert adp.engines == 8


def test_expected_max_load_matches_a_routing_simulation() -> None:
    rng = np.random.default_rng(0)
    experts, top_k, ranks = 256, 8, 16
    for tokens in (64, 1024):
        trials = 400
        picks = np.argsort(rng.random((trials, tokens, experts)), axis=2)[:, :, :top_k]  # k distinct experts
        load = np.stack([np.bincount(t.ravel() // (experts // ranks), minlength=ranks) for t in picks])
        simulated = load.max(axis=1).mean()
        assert float(expected_max_rank_load(tokens, top_k, experts, ranks)) == pytest.approx(simulated, rel=0.04)
    assert float(expected_max_rank_load(100, 8, 256, 1)) == 800.0


def test_hit_probability_is_the_hypergeometric_complement() -> None:
    assert float(coll.expert_hit_probability(256, 8, 1.0)) == pytest.approx(1.0)
    assert float(coll.expert_hit_probability(256, 8, 1 / 256)) == pytest.approx(8 / 256)
    half = float(coll.expert_hit_probability(256, 8, 0.5))
    assert half == pytest.approx(1 - np.prod([(128 - i) / (256 - i) for i in range(8)]))


def test_all_to_all_grows_when_ep_spans_nodes() -> None:
    one_node, two_nodes = replica(attention_dp=8, ep=8, weights="fp8"), replica(attention_dp=16, ep=16, weights="fp8")
    tokens = np.array([32.0, 256.0])
    wide, narrow = two_nodes.all_to_all_time(tokens), one_node.all_to_all_time(tokens)
    assert np.all(wide > narrow) and wide[1] > 1.2 * narrow[1]  # InfiniBand carries the other node's share
    assert np.all(replica(tp=8, ep=8, weights="fp8").all_to_all_time(tokens) == 0.0)


@pytest.mark.parametrize("share", [1 / 64, 1 / 32, 1 / 8, 1 / 2])
def test_group_limited_hit_probability_matches_a_routing_simulation(share: float) -> None:
    """DeepSeek-V3's routing (arXiv:2412.19437 section 2.1.2): 4 of 8 groups of 32 experts, then
    8 of their 128 experts. Units of one GPU (8 or 4 experts), one node's group (32) and half
    the experts (128), against 200,000 simulated tokens (standard error < 0.0012)."""
    rng = np.random.default_rng(7)
    tokens, groups, picked_groups, experts, top_k = 200_000, 8, 4, 256, 8
    per_group = experts // groups
    chosen = np.argsort(rng.random((tokens, groups)), axis=1)[:, :picked_groups]
    candidates = (chosen[:, :, None] * per_group + np.arange(per_group)).reshape(tokens, -1)
    order = np.argsort(rng.random(candidates.shape), axis=1)[:, :top_k]
    picks = np.take_along_axis(candidates, order, axis=1)
    simulated = float((picks < share * experts).any(axis=1).mean())
    modelled = float(coll.expert_hit_probability(experts, top_k, share, groups, picked_groups))
    assert modelled == pytest.approx(simulated, abs=0.005)


def test_node_limited_routing_sends_fewer_tokens_across_nodes() -> None:
    """At EP64 over 8 nodes, DeepSeek-V3's node-limited routing (at most 4 of 8 nodes) makes a
    token reach 8 x 0.454 = 3.6 nodes, not the 8 x 0.662 = 5.3 of uniform routing: about 31 %
    fewer de-duplicated bytes over InfiniBand; the flat dispatch's copies are unchanged."""
    phases = coll.decompose(load_system("dgx-h100"), np.array([64]), np.array([1]))
    uniform = coll.expert_dispatch_bytes(phases, 100.0, 7168.0, 256, 8, dedup=True)
    limited = coll.expert_dispatch_bytes(phases, 100.0, 7168.0, 256, 8, dedup=True, groups=8, groups_per_token=4)
    assert limited[-1, 0] / uniform[-1, 0] == pytest.approx(0.4536 / 0.6618, rel=2e-3)
    flat = coll.expert_dispatch_bytes(phases, 100.0, 7168.0, 256, 8, dedup=False)
    assert coll.expert_dispatch_bytes(phases, 100.0, 7168.0, 256, 8, dedup=False, groups=8,
                                      groups_per_token=4) == pytest.approx(flat)


def test_group_limited_routing_is_validated() -> None:
    base = {"experts": 256, "top_k": 8, "expert_ffn_hidden_size": 2048}
    assert MoE(**base, expert_groups=8, groups_per_token=4).groups_per_token == 4
    with pytest.raises(ValueError, match="must divide"):
        MoE(**base, expert_groups=7, groups_per_token=4)
    with pytest.raises(ValueError, match=r"exceeds moe\.expert_groups"):
        MoE(**base, expert_groups=8, groups_per_token=9)
    with pytest.raises(ValueError, match="exceeds the 4 experts"):
        MoE(experts=256, top_k=8, expert_ffn_hidden_size=2048, expert_groups=64, groups_per_token=1)


def test_node_level_deduplication_lowers_inter_node_bytes() -> None:
    phases = coll.decompose(H200.system, np.array([32]), np.array([1]))  # 4 nodes of 8
    dedup = coll.expert_dispatch_bytes(phases, 100.0, 7168.0, 256, 8, dedup=True)
    flat = coll.expert_dispatch_bytes(phases, 100.0, 7168.0, 256, 8, dedup=False)
    assert dedup[-1, 0] < 0.6 * flat[-1, 0]  # InfiniBand: once per destination node
    # a flat all-to-all sends the 8 copies, 24/32 of them to other nodes
    assert flat[-1, 0] == pytest.approx(100 * 7168 * 8 * 24 / 32)
    dedup_time = coll.expert_all_to_all_time(phases, 100.0, 7168.0, 256, 8, dedup=True)
    assert dedup_time[0] < coll.expert_all_to_all_time(phases, 100.0, 7168.0, 256, 8, dedup=False)[0]


def test_fp8_weights_dispatch_in_fp8() -> None:
    fp8, bf16 = replica(attention_dp=16, ep=16, weights="fp8"), replica(attention_dp=16, ep=16, weights="bf16")
    assert fp8.dispatch_bytes_per_token() == 7168 + 4 * 7168 / 128
    assert bf16.dispatch_bytes_per_token() == 2 * 7168
    assert float(fp8.all_to_all_time(256.0)) < float(bf16.all_to_all_time(256.0))


def test_capacity_considers_attention_dp_for_moe_only() -> None:
    moe = candidate_deployments(DSV3, H200, ("fp8",), ("bf16",), 64, 256)
    wide = [d for d in moe if d.attention_dp > 1]
    assert {d.attention_dp for d in wide if d.pp == 1} == {2, 4, 8, 16, 32, 64}
    assert all(d.tp == 1 and d.ep == d.attention_dp and d.chips <= 64 for d in wide)
    dense = candidate_deployments(load_model("llama3-70b"), H200, ("fp8",), ("bf16",), 64, 256)
    assert all(d.attention_dp == 1 for d in dense)


@pytest.mark.parametrize(("argv", "field"), [
    (["--attention-dp", "0"], "--attention-dp"),
    (["--attention-dp", "4", "--ep", "8"], "--ep"),
    (["--attention-dp", "8", "--tp", "1", "--ep", "8", "--chips-per-replica", "16"], "--chips-per-replica"),
    (["--model", "llama3-70b", "--attention-dp", "2"], "--attention-dp"),
])
def test_bad_attention_dp_layouts_are_refused(capsys: pytest.CaptureFixture[str], argv: list[str],
                                              field: str) -> None:
    model = [] if "--model" in argv else ["--model", "deepseek-v3"]
    code, _out, err = run_cli(capsys, ["serve", *model, "--system", "dgx-h200", "--weights", "fp8", *argv])
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and field in err


def test_validation_rows_run_attention_dp_where_the_source_says_so_for_moe() -> None:
    from clusterplan.validation.inference_cases import attention_dp_layout

    row = {"notes": "ModelOpt checkpoints | MoE runs use enable_attention_dp", "parallelism_as_published": "TP8 EP8",
           "expert_parallel": ""}
    assert attention_dp_layout(row, DSV3, 8) == {"attention_dp": 8, "tp": 1, "ep": 8}
    assert attention_dp_layout({**row, "expert_parallel": "4"}, DSV3, 8)["ep"] == 4
    assert attention_dp_layout(row, load_model("llama3-70b"), 8) == {}  # the page's note is about MoE runs
    assert attention_dp_layout({**row, "notes": "enable_attention_dp: false"}, DSV3, 8) == {}
    assert attention_dp_layout({**row, "notes": ""}, DSV3, 8) == {}


def test_skewed_routing_matches_a_simulation() -> None:
    """With per-expert load shares of Gini G (a trained checkpoint on real text), the busiest EP
    rank's expected load matches a routing simulation: each trial places lognormal expert shares
    at random over the ranks and every token picks top-k distinct experts in proportion to them."""
    from statistics import NormalDist

    rng = np.random.default_rng(1)
    experts, top_k, ranks, tokens, trials = 256, 8, 8, 1024, 300
    sigma = 0.6  # lognormal shares: Gini = 2 Phi(sigma / sqrt 2) - 1
    gini = 2.0 * NormalDist().cdf(sigma / np.sqrt(2.0)) - 1.0
    maxima = []
    for _ in range(trials):
        log_share = rng.normal(0.0, sigma, experts)
        keys = log_share[None, :] + rng.gumbel(size=(tokens, experts))  # Gumbel top-k: draws without replacement
        picks = np.argsort(-keys, axis=1)[:, :top_k]
        maxima.append(np.bincount(picks.ravel() // (experts // ranks), minlength=ranks).max())
    simulated = float(np.mean(maxima))
    uniform = float(expected_max_rank_load(tokens, top_k, experts, ranks))
    skewed = float(expected_max_rank_load(tokens, top_k, experts, ranks, gini))
    assert skewed == pytest.approx(simulated, rel=0.06)
    assert simulated > uniform * 1.05  # the skew is what the uniform model misses


def test_routing_gini_defaults_to_real_text_and_slows_only_expert_parallel_moe() -> None:
    from clusterplan.training.batch import REAL_TEXT_ROUTING_GINI

    assert Deployment().routing_gini == REAL_TEXT_ROUTING_GINI == 0.2
    skewed, uniform = replica(attention_dp=8, ep=8, weights="fp8"), replica(attention_dp=8, ep=8, weights="fp8",
                                                                             routing_gini=0.0)
    assert float(skewed.token_time(256)) > float(uniform.token_time(256))
    assert float(skewed.all_to_all_time(256)) > float(uniform.all_to_all_time(256))
    # one EP rank holds every expert: no busiest rank to wait for
    assert float(replica(tp=8, weights="fp8").token_time(256)) == pytest.approx(
        float(replica(tp=8, weights="fp8", routing_gini=0.0).token_time(256)))


def test_fp4_mla_keeps_its_latent_projections_bf16() -> None:
    """NVIDIA's NVFP4 DeepSeek checkpoints leave q_a, q_b, kv_a and kv_b in bf16: 2 bytes a
    weight, and their GEMMs at bf16; fp8 checkpoints and non-MLA models quantise them."""
    from clusterplan.inference.step import mla_latent_projection_params, projection_format

    llama = load_model("llama3-70b")
    assert projection_format(DSV3, "fp4") == "bf16"
    assert projection_format(DSV3, "fp8") == "fp8" and projection_format(llama, "fp4") == "fp4"
    latent = mla_latent_projection_params(DSV3)
    m = DSV3.mla
    assert m is not None and m.q_lora_rank is not None
    assert latent == (7168 * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * 128 * 192
                      + 7168 * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
                      + m.kv_lora_rank * 128 * (m.qk_nope_head_dim + m.v_head_dim))
    naive = (DSV3.total_params - DSV3.embedding_params - DSV3.lm_head_params) * 0.5 \
        + (DSV3.embedding_params + DSV3.lm_head_params) * 2.0
    assert weight_bytes(DSV3, "fp4") == pytest.approx(naive + DSV3.layers * latent * 1.5)
    assert mla_latent_projection_params(llama) == 0


def test_mla_decode_runs_at_flashmla_rate_for_any_kv_format() -> None:
    """Weight-absorbed MLA decode: 2 x heads x (576 + 512) FLOPs per pair and layer at FlashMLA's
    measured 660 of 989 TFLOP/s of the bf16 peak, for an fp8 cache as for a bf16 one."""
    from clusterplan.inference.step import MLA_DECODE_FRACTION

    fp8 = replica(attention_dp=8, ep=8, weights="fp8", kv_cache="fp8")
    bf16 = replica(attention_dp=8, ep=8, weights="fp8", kv_cache="bf16")
    flops = 2.0 * 128 * (576 + 512) * 61
    assert pytest.approx(0.667, abs=0.001) == MLA_DECODE_FRACTION
    assert fp8.seconds_per_decode_pair == pytest.approx(flops / (float(H200.peak[1]) * MLA_DECODE_FRACTION))
    assert bf16.seconds_per_decode_pair == pytest.approx(fp8.seconds_per_decode_pair)
    # TP shards the heads
    assert replica(tp=8, ep=8, weights="fp8").seconds_per_decode_pair == pytest.approx(fp8.seconds_per_decode_pair / 8)


def test_routing_gini_is_a_serve_option(capsys: pytest.CaptureFixture[str]) -> None:
    skewed = serve_json(capsys, "--attention-dp", "8", "--ep", "8")
    uniform = serve_json(capsys, "--attention-dp", "8", "--ep", "8", "--routing-gini", "0")
    assert skewed["deployment"]["routing_gini"] == 0.2 and uniform["deployment"]["routing_gini"] == 0.0
    assert uniform["saturated"]["output_tokens_per_s"] > skewed["saturated"]["output_tokens_per_s"]
    code, _, err = run_cli(capsys, ["serve", "--model", "deepseek-v3", "--system", "dgx-h200", "--attention-dp", "8",
                                    "--ep", "8", "--weights", "fp8", "--routing-gini", "1.5"])
    assert code == 2 and "--routing-gini" in err and "1.5" in err and "Traceback" not in err


def test_published_wide_ep_runs_are_validated_not_fitted() -> None:
    """The TensorRT-LLM DeepSeek-R1 runs of tables/wide_ep_published.csv join MLPerf's in the
    validation-only wide-EP table, each modelled with its own layout and formats."""
    from clusterplan.validation.calibrate import VALIDATION_ONLY_TABLES
    from clusterplan.validation.inference_cases import MLPERF_WIDE_EP_TABLE, wide_ep_published
    from clusterplan.validation.registry import known_tables

    rows = wide_ep_published()
    assert [c.label.split()[0] for c in rows] == ["WEP01", "WEP02", "WEP03", "WEP04", "WEP05"]
    assert all(c.skip is None and c.table == MLPERF_WIDE_EP_TABLE and c.source for c in rows)
    assert MLPERF_WIDE_EP_TABLE in VALIDATION_ONLY_TABLES
    assert {c.label for c in rows} <= {c.label for c in known_tables()[MLPERF_WIDE_EP_TABLE]()}
    from clusterplan.catalog import load_efficiency

    b200 = rows[0]
    assert b200.predict is not None and b200.family == "blackwell"
    predicted = b200.predict(load_efficiency("blackwell"))
    assert b200.published < predicted < 3.0 * b200.published  # too fast, as the table reports
