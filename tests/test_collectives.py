"""Collective times against hand-computed alpha-beta values on switch and torus tiers."""

from __future__ import annotations

import numpy as np
import pytest

from clusterplan.costs import collectives as coll
from clusterplan.specs import System

MB = 1e6


def test_all_reduce_inside_one_switch_domain(switch_system: System) -> None:
    phases = coll.decompose(switch_system, 8, 1)
    expected = 2 * 100 * MB * (7 / 8) / 400e9  # ring: 2 (g-1)/g D / B
    assert float(coll.all_reduce_time(phases, 100 * MB)[0]) == pytest.approx(expected)


def test_hierarchical_reduce_scatter_crosses_the_network_with_the_shrunk_buffer(switch_system: System) -> None:
    # 32 ranks, stride 1: 8 per node over the switch, then 4 nodes over the network on D/8.
    phases = coll.decompose(switch_system, 32, 1)
    assert phases.fan[:, 0].tolist() == [8.0, 4.0]
    expected = 100 * MB * (7 / 8) / 400e9 + (100 * MB / 8) * (3 / 4) / 50e9
    assert float(coll.reduce_scatter_time(phases, 100 * MB)[0]) == pytest.approx(expected)


def test_strided_group_with_one_member_per_node_uses_only_the_network(switch_system: System) -> None:
    phases = coll.decompose(switch_system, 4, 8)  # e.g. DP across nodes with TP=8 inside
    assert phases.fan[:, 0].tolist() == [1.0, 4.0]
    expected = 100 * MB * (3 / 4) / 50e9
    assert float(coll.all_gather_time(phases, 100 * MB)[0]) == pytest.approx(expected)


def test_group_of_one_costs_nothing(switch_system: System) -> None:
    phases = coll.decompose(switch_system, 1, 1)
    assert float(coll.all_reduce_time(phases, 100 * MB)[0]) == 0.0


def _two_switch_tiers() -> System:
    return System(name="s", chip="c", chips_per_node=8, source="test", tiers=[
        {"name": "a", "topology": "switch", "size": 8, "bandwidth": 1e12, "latency_s": 1e-6,
         "efficiency": 1.0, "source": "test"},
        {"name": "b", "topology": "switch", "size": None, "bandwidth": 1e12, "latency_s": 1e-5,
         "efficiency": 1.0, "source": "test"},
    ])


def test_reduce_scatter_latency_counts_every_ring_hop_at_the_tier_it_crosses() -> None:
    # 64 ranks in 8 nodes: a flat ring makes 63 hops, 56 inside nodes and 7 between them, as
    # NCCL's tuner counts them (nsteps - nInterSteps intra-node, nNodes - 1 network).
    phases = coll.decompose(_two_switch_tiers(), 64, 1)
    assert phases.ring_steps[:, 0].tolist() == [56.0, 7.0]
    assert float(coll.reduce_scatter_time(phases, 1.0)[0]) == pytest.approx(56e-6 + 7e-5, rel=1e-3)
    assert float(coll.all_gather_time(phases, 1.0)[0]) == pytest.approx(56e-6 + 7e-5, rel=1e-3)


def test_strided_ring_hops_all_cross_the_network() -> None:
    # 16 ranks at stride 8 (one per node, as DP beside TP 8): 15 network hops, none inside.
    phases = coll.decompose(_two_switch_tiers(), 16, 8)
    assert phases.ring_steps[:, 0].tolist() == [0.0, 15.0]


def test_all_reduce_takes_the_cheaper_of_the_ring_and_the_tree() -> None:
    phases = coll.decompose(_two_switch_tiers(), 64, 1)
    # tiny message: the tree's 3 steps (log2 8) inside and 3 (log2 8 nodes) outside, twice,
    # beat the ring's 2 x (56 + 7) hops.
    assert float(coll.all_reduce_time(phases, 1.0)[0]) == pytest.approx(2 * (3e-6 + 3e-5), rel=1e-3)
    # two ranks: ring and tree both take one step each way.
    pair = coll.decompose(_two_switch_tiers(), 2, 1)
    assert float(coll.all_reduce_time(pair, 1.0)[0]) == pytest.approx(2 * 1e-6, rel=1e-3)


def test_torus_row_gets_one_dimension_and_full_torus_gets_all(torus_system: System) -> None:
    row = coll.decompose(torus_system, 4, 1)  # one row of the 4x4 torus
    full = coll.decompose(torus_system, 16, 1)
    column = coll.decompose(torus_system, 4, 4)  # one column
    assert float(row.bandwidth[0, 0]) == pytest.approx(50e9)
    assert float(column.bandwidth[0, 0]) == pytest.approx(50e9)
    assert float(full.bandwidth[0, 0]) == pytest.approx(100e9)
    assert float(full.steps[0, 0]) == 6.0  # (4-1) + (4-1) ring steps, not 15
    d = 64 * MB
    assert float(coll.reduce_scatter_time(full, d)[0]) == pytest.approx(d * 15 / 16 / 100e9)


def test_all_to_all_is_limited_by_the_slowest_tier(switch_system: System) -> None:
    phases = coll.decompose(switch_system, 16, 1)  # 8 local peers, 8 remote
    d = 160 * MB
    local = d * 7 / 16 / 400e9
    remote = d * 8 / 16 / 50e9
    assert float(coll.all_to_all_time(phases, d)[0]) == pytest.approx(max(local, remote))


def test_p2p_picks_the_tier_that_joins_the_two_ranks(switch_system: System) -> None:
    times = coll.p2p_time(switch_system, np.array([1, 8]), 10 * MB)
    assert times.tolist() == pytest.approx([10 * MB / 400e9, 10 * MB / 50e9])


def test_vectorised_decomposition_matches_one_at_a_time(switch_system: System) -> None:
    sizes = np.array([1, 2, 8, 16, 64, 128])
    strides = np.array([1, 4, 1, 2, 8, 1])
    batch = coll.all_reduce_time(coll.decompose(switch_system, sizes, strides), 50 * MB)
    single = [float(coll.all_reduce_time(coll.decompose(switch_system, g, s), 50 * MB)[0])
              for g, s in zip(sizes, strides, strict=True)]
    assert batch.tolist() == pytest.approx(single)


def test_overlapped_communication_costs_what_outlasts_compute_or_the_compute_it_slows() -> None:
    # 10 ms of compute beside 4 ms of communication holding 15 % of the SMs: the compute runs
    # at 85 % for 4 ms, so the pair takes 10 + 0.15 * 4 ms.
    assert float(coll.overlapped_exposure(4e-3, 10e-3, 0.15)) == pytest.approx(0.6e-3)
    # Communication that outlasts the compute: only the excess shows.
    assert float(coll.overlapped_exposure(30e-3, 10e-3, 0.15)) == pytest.approx(20e-3)
    # share 0: the ideal overlap of earlier rounds.
    assert float(coll.overlapped_exposure(4e-3, 10e-3, 0.0)) == 0.0
    # Continuous at the crossover comm = cover / (1 - share).
    cross = 10e-3 / 0.85
    assert float(coll.overlapped_exposure(cross, 10e-3, 0.15)) == pytest.approx(cross - 10e-3)


def test_communication_takes_twenty_sms_of_a_gpu_and_none_of_a_chip_with_collective_engines() -> None:
    from clusterplan.catalog import load_chip

    assert coll.overlap_compute_share(load_chip("h800").compute_units) == pytest.approx(20 / 132)
    assert coll.overlap_compute_share(load_chip("b200").compute_units) == pytest.approx(20 / 148)
    assert coll.overlap_compute_share(load_chip("a100-80gb").compute_units) == pytest.approx(20 / 108)
    for name in ("tpu-v5p", "trainium2", "gaudi3"):
        assert coll.overlap_compute_share(load_chip(name).compute_units) == 0.0
