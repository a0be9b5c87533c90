"""Step-time tables of the serving simulator: agreement with direct calls, the fallback for models
that do not take arrays, and identical simulations either way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.inference import workload as wl
from clusterplan.inference.serving import simulate
from clusterplan.inference.step import Deployment, ReplicaModel
from clusterplan.inference.steptimes import StepTimes, array_methods, interpolation_error

REPLICAS = [
    ("llama3-70b", "dgx-h100", Deployment(tp=8, weights="fp8", kv_cache="fp8")),
    ("llama3-8b", "dgx-h100", Deployment(tp=1, weights="fp8")),
    ("mixtral-8x22b", "dgx-h100", Deployment(tp=8, weights="fp8")),
    ("deepseek-v3", "dgx-h100", Deployment(tp=8, pp=2, weights="fp8", kv_cache="fp8")),
    ("llama3-405b", "trn2-ultraserver", Deployment(tp=16, weights="fp8")),
]


@pytest.mark.parametrize(("model", "system", "deployment"), REPLICAS, ids=[r[0] for r in REPLICAS])
def test_tables_agree_with_direct_calls(model: str, system: str, deployment: Deployment) -> None:
    replica = ReplicaModel(load_model(model), hardware_for(load_system(system)), deployment)
    times = StepTimes(replica, 8192)
    assert times.tabled  # ReplicaModel is evaluated on arrays
    worst = interpolation_error(times, samples=400, seed=1)
    assert worst["decode"] <= 0.005
    assert worst["prefill"] <= 1e-12  # one entry per token count: exact


@dataclass
class Scalar:
    """A step model that only takes numbers (``math``-style code): it must be called directly."""

    kv_capacity_tokens: int = 100_000
    max_batch: int = 32

    def prefill_time(self, tokens: int, context: int) -> float:
        return 0.01 + 1e-5 * float(tokens) + 1e-9 * float(context)

    def decode_time(self, batch: int, total_context: int) -> float:
        return 0.02 + 1e-4 * float(batch) + max(0.0, 1e-8 * float(total_context) - 1e-4)

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        return self.decode_time(batch, total_context) + 1e-5 * float(prefill_tokens)

    def kv_transfer_time(self, tokens: int) -> float:
        return 0.0


def test_a_model_that_refuses_arrays_is_called_directly() -> None:
    model = Scalar()
    assert array_methods(model) is None
    times = StepTimes(model, 8192)
    assert not times.tabled and times.decode_row(3) is None
    assert times.decode(3, 5000) == model.decode_time(3, 5000)
    assert np.isnan(interpolation_error(times)["decode"])


@dataclass
class Wrong(Scalar):
    """Takes arrays but gives other numbers on them than one at a time: not trusted."""

    def decode_time(self, batch, total_context):  # type: ignore[no-untyped-def]
        if isinstance(batch, np.ndarray):
            return 2.0 * (0.02 + 1e-4 * batch)
        return 0.02 + 1e-4 * batch


def test_array_results_that_disagree_are_not_trusted() -> None:
    assert array_methods(Wrong()) is None


def test_tabled_and_direct_runs_agree_on_a_real_replica() -> None:
    replica = ReplicaModel(load_model("llama3-70b"), hardware_for(load_system("dgx-h100")),
                           Deployment(tp=8, weights="fp8", kv_cache="fp8"))
    work = wl.poisson(20, 1500, 1000, 200, seed=3, input_spread=0.5, output_spread=0.5)
    tabled = simulate(replica, work)
    direct = simulate(replica, work, step_tables=False)
    assert tabled.iterations == direct.iterations
    assert tabled.finish_s == pytest.approx(direct.finish_s, rel=1e-4)
    assert np.nanmean(tabled.tpot_s) == pytest.approx(np.nanmean(direct.tpot_s), rel=1e-3)
