"""The expert all-to-all against the Megatron-Core MoE report's measured dispatch and combine
latencies (validation/dispatch_check.py; arXiv:2603.07685, Table 7)."""

from __future__ import annotations

import statistics

import pytest

from clusterplan.validation.dispatch_check import DispatchPoint, dispatch_points, predicted_time


@pytest.fixture(scope="module")
def points() -> list[DispatchPoint]:
    return dispatch_points()


def test_every_row_of_the_table_is_read_once(points: list[DispatchPoint]) -> None:
    keys = {(p.system, p.ep, p.dispatcher, p.op) for p in points}
    assert len(keys) == len(points) == 2 * 4 * 2 * 2
    assert {p.ep for p in points} == {8, 16, 32, 64}
    assert all(p.source for p in points)


def test_the_unfitted_dispatch_model_is_within_a_third_of_every_measurement(points: list[DispatchPoint]) -> None:
    """At the time of writing: 13.4 % mean, worst -29.8 % (H100 HybridEP combine at EP16). The flat
    all-to-all runs 10-28 % slower than the model's tier bandwidth on both systems (NCCL's
    all-to-all over many peers); a change that moves this check should say why in its note."""
    errors = [abs(p.error) for p in points]
    assert max(errors) < 0.33
    assert statistics.mean(errors) < 0.18


def test_the_model_orders_the_dispatchers_and_fabrics_as_measured(points: list[DispatchPoint]) -> None:
    """HybridEP beats the flat all-to-all at every size on both systems, and on H100 both jump
    once EP leaves the 8-GPU NVLink domain, in the measurements and in the model alike."""
    def at(system: str, ep: int, dispatcher: str, op: str) -> DispatchPoint:
        (point,) = [p for p in points if (p.system, p.ep, p.dispatcher, p.op) == (system, ep, dispatcher, op)]
        return point

    for system in ("gb200-nvl72", "dgx-h100"):
        for ep in (8, 16, 32, 64):
            hybrid, flat = at(system, ep, "hybridep", "dispatch"), at(system, ep, "alltoall", "dispatch")
            assert hybrid.measured_s < flat.measured_s and hybrid.predicted_s < flat.predicted_s
    for dispatcher in ("hybridep", "alltoall"):
        inside, across = at("dgx-h100", 8, dispatcher, "dispatch"), at("dgx-h100", 16, dispatcher, "dispatch")
        assert across.measured_s > 2 * inside.measured_s and across.predicted_s > 1.5 * inside.predicted_s
        nvl8, nvl72 = at("dgx-h100", 64, dispatcher, "dispatch"), at("gb200-nvl72", 64, dispatcher, "dispatch")
        assert nvl8.measured_s > 5 * nvl72.measured_s and nvl8.predicted_s > 5 * nvl72.predicted_s


def test_dedup_only_matters_once_a_token_has_several_experts_per_domain() -> None:
    """Inside one NVLink domain of 8 ranks with top-8 routing, a token visits ~5.3 of them:
    de-duplication sends ~0.66 of the flat copies, the ratio the measured EP8 pairs show
    (GB200 391/735 = 0.53, H100 661/1265 = 0.52) less the model's per-collective cost."""
    for system in ("gb200-nvl72", "dgx-h100"):
        ratio = predicted_time(system, 8, True) / predicted_time(system, 8, False)
        assert 0.55 < ratio < 0.75
