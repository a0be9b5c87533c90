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
