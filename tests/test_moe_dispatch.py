"""Hierarchical (deduplicated) EP dispatch, fp8 dispatch, node-limited routing and the SMs that
overlapped communication takes, against hand-computed values."""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np
import pytest

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.costs import collectives as coll
from clusterplan.errors import SpecError
from clusterplan.specs import Model, Plan, System
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import (
    EP_COMM_SMS,
    FP8_DISPATCH_BYTES,
    ep_comm_sm_share,
    ep_overlapped_exposure,
    estimate,
)


def _copies(system: System, ep: int, experts: int, top_k: int, dedup: bool, limit: int | None = None) -> list[float]:
    phases = coll.decompose(system, ep, 1)
    return [float(c) for c in coll.ep_dispatch_copies(phases, experts, top_k, dedup, limit)[:, 0]]


def test_flat_dispatch_sends_top_k_copies_split_by_where_the_experts_live(switch_system: System) -> None:
    # EP16 over two 8-chip nodes, top-2: of 2 copies, 7/16 stay on the node (not self), 8/16 leave it.
    nvlink, network = _copies(switch_system, 16, 16, 2, dedup=False)
    assert nvlink == pytest.approx(2 * 7 / 16)
    assert network == pytest.approx(2 * 8 / 16)


def test_deduplicated_dispatch_crosses_the_network_once_per_remote_node(switch_system: System) -> None:
    # 16 experts, one per rank, top-2 over 2 nodes: the token misses a node with probability
    # C(8,2)/C(16,2) = 7/30, so it reaches 2*(23/30) nodes, half of them remote on average.
    nvlink, network = _copies(switch_system, 16, 16, 2, dedup=True)
    assert network == pytest.approx(2 * (1 - 7 / 30) * (1 - 8 / 16))
    # NVLink forwards one copy per destination rank (2 distinct ranks), less the 1/8 already there.
    assert nvlink == pytest.approx(2 * (1 - 1 / 8))


def test_deduplication_saves_more_the_more_experts_share_a_node(switch_system: System) -> None:
    # DeepSeek-V3's shape: 256 experts, top-8, EP64 over 8 nodes.
    flat = _copies(switch_system, 64, 256, 8, dedup=False)[1]
    dedup = _copies(switch_system, 64, 256, 8, dedup=True)[1]
    missed = comb(256 - 32, 8) / comb(256, 8)
    assert flat == pytest.approx(8 * 56 / 64)
    assert dedup == pytest.approx(8 * (1 - missed) * (7 / 8))
    assert dedup < 0.7 * flat


def test_node_limited_routing_caps_the_nodes_a_token_reaches(switch_system: System) -> None:
    # At most 4 of 8 nodes: top-8 drawn from those 4 nodes' 128 experts.
    limited = _copies(switch_system, 64, 256, 8, dedup=True, limit=4)[1]
    missed = comb(128 - 32, 8) / comb(128, 8)
    assert limited == pytest.approx(4 * (1 - missed) * (7 / 8))
    assert limited <= 4 * 7 / 8
    assert limited < _copies(switch_system, 64, 256, 8, dedup=True)[1]
    # A limit at or above the nodes the group spans changes nothing.
    assert _copies(switch_system, 16, 16, 2, dedup=True, limit=2) == _copies(switch_system, 16, 16, 2, dedup=True)


def test_fp8_dispatch_halves_dispatch_bytes_and_leaves_combine_in_bf16(switch_system: System) -> None:
    phases = coll.decompose(switch_system, 16, 1)
    copies = coll.ep_dispatch_copies(phases, 16, 2, True)
    h, tokens = 4096, 8192
    bf16 = float(coll.ep_all_to_all_time(phases, 2.0 * h, tokens, copies)[0])
    fp8 = float(coll.ep_all_to_all_time(phases, FP8_DISPATCH_BYTES * h, tokens, copies)[0])
    assert fp8 / bf16 == pytest.approx((1 + 4 / 128) / 2)
    # The network is the slowest tier: tokens x h x 2 bytes x copies / 50 GB/s.
    assert bf16 == pytest.approx(tokens * h * 2.0 * 2 * (23 / 30) * 0.5 / 50e9)


def test_fp8_dispatch_in_the_step_saves_a_quarter_of_the_bandwidth_time() -> None:
    model = load_model("qwen3-30b-a3b")
    hw = hardware_for(load_system("dgx-h100"))
    common: dict[str, Any] = {"dp": 16, "ep": 16, "global_batch": 64, "seq_len": 4096, "routing_gini": 0.0}

    def ep_comm(**fields: Any) -> float:
        plan = Plan(**common, **fields).validate_for(model)
        return float(estimate(model, hw, PlanBatch.from_plans([plan], model)).time_breakdown["ep_comm"][0])

    bf16, fp8 = ep_comm(), ep_comm(moe_dispatch_fp8=True)
    # dispatch 2 -> 1.03 bytes per element, combine 2: (1.03 + 2) / 4 of the bandwidth time.
    assert fp8 < bf16
    assert fp8 / bf16 == pytest.approx((FP8_DISPATCH_BYTES + 2) / 4, abs=0.02)
    assert ep_comm(moe_dispatcher="all_to_all") > bf16


def test_overlapped_communication_slows_compute_by_its_sm_share() -> None:
    share = 20 / 132
    assert ep_comm_sm_share("hopper") == pytest.approx(share)
    assert EP_COMM_SMS == 20
    assert ep_comm_sm_share("trainium2") == 0.0
    # Plenty of compute: the overlap is not free, it costs the SM share of the communication.
    assert float(ep_overlapped_exposure(10.0, 100.0, share)) == pytest.approx(10.0 * share)
    # Communication longer than compute: what outlasts the compute is exposed.
    assert float(ep_overlapped_exposure(100.0, 10.0, share)) == pytest.approx(90.0)
    assert float(ep_overlapped_exposure(10.0, 100.0, 0.0)) == 0.0


def test_overlap_in_the_step_exposes_the_sm_share_of_the_all_to_all() -> None:
    model = load_model("qwen3-30b-a3b")
    hw = hardware_for(load_system("dgx-h100"))
    common: dict[str, Any] = {"dp": 8, "ep": 8, "global_batch": 64, "seq_len": 4096, "routing_gini": 0.0}
    runs = [estimate(model, hw, PlanBatch.from_plans([Plan(**common, overlap_ep=o).validate_for(model)], model))
            for o in (False, True)]
    exposed, overlapped = (float(r.time_breakdown["ep_comm"][0]) for r in runs)
    # Intra-node EP on NVLink is far shorter than the layer's compute: only the SM share stays.
    assert overlapped == pytest.approx(exposed * 20 / 132)


def test_node_limit_is_a_model_field_and_deepseek_v3_sets_four() -> None:
    model = load_model("deepseek-v3")
    assert model.moe is not None and model.moe.max_nodes_per_token == 4
    with pytest.raises(ValueError):
        Model.model_validate({**model.model_dump(), "moe": {**model.moe.model_dump(), "max_nodes_per_token": 0}})


def test_dispatch_settings_on_a_dense_model_are_refused() -> None:
    model = load_model("llama3-8b")
    with pytest.raises(SpecError, match="moe_dispatch_fp8"):
        Plan(dp=8, global_batch=64, seq_len=4096, moe_dispatch_fp8=True).validate_for(model)


def test_arrays_default_to_deduplicated_bf16_dispatch() -> None:
    model = load_model("qwen3-30b-a3b")
    batch = PlanBatch.from_arrays(model, dp=np.array([16]), ep=np.array([16]), global_batch=64, seq_len=4096)
    assert int(batch.moe_dedup[0]) == 1 and int(batch.moe_dispatch_fp8[0]) == 0


def test_modelzoo_table_is_registered_in_the_moe_stage_and_every_row_is_accounted_for() -> None:
    from clusterplan.validation.calibrate import MOE_TABLES
    from clusterplan.validation.cases import known_tables
    from clusterplan.validation.cases_moe_zoo import megatron_moe_modelzoo

    assert "megatron_moe_modelzoo" in known_tables() and "megatron_moe_modelzoo" in MOE_TABLES
    cases = megatron_moe_modelzoo()
    assert len(cases) == 14  # every CSV row comes back
    for case in cases:
        assert "Megatron-MoE-ModelZoo" in case.source
        if case.skip is None:
            assert case.plan is not None and case.assumptions
        else:
            assert len(case.skip) > 10
    modelled = {c.label: c for c in cases if c.skip is None}
    assert len(modelled) == 7
    # The dispatcher and the overlap are taken from the row.
    a2a = [c for label, c in modelled.items() if " A2A " in label]
    assert len(a2a) == 1 and a2a[0].plan is not None and a2a[0].plan.moe_dispatcher == "all_to_all"
    overlapped = [c for label, c in modelled.items() if "overlap" in label]
    assert overlapped and all(c.plan is not None and c.plan.overlap_ep for c in overlapped)


def test_modelzoo_flop_count_per_token_is_consistent_across_the_h100_rows() -> None:
    from clusterplan.validation.cases import _rows
    from clusterplan.validation.cases_moe_zoo import _flops_per_token

    rows = [r for r in _rows("megatron_moe_modelzoo") if r["step_time_s"] and r["model"] == "Qwen3-235B-A22B"]
    counts = [float(r["tflops_per_gpu"]) * 1e12 * int(r["gpus"]) * float(r["step_time_s"])
              / (int(r["global_batch_size_seqs"]) * int(r["seq_len_tokens"])) for r in rows]
    assert len(counts) == 5 and max(counts) / min(counts) < 1.01
    # 245 TFLOP/s x 256 GPUs x 19.7 s / (2048 x 4096 tokens) = 147.3 GFLOP per token.
    assert counts[0] == pytest.approx(245e12 * 256 * 19.7 / (2048 * 4096))
    assert _flops_per_token(_rows("megatron_moe_modelzoo")) == pytest.approx(sum(counts) / 5)
