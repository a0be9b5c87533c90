"""Step-time tables of the serving simulator: exact agreement with direct calls, the fallback for
models without (or with wrong) separable terms, and identical simulations either way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.inference import workload as wl
from clusterplan.inference.engine import StepTerms
from clusterplan.inference.serving import simulate
from clusterplan.inference.step import Deployment, ReplicaModel
from clusterplan.inference.steptimes import StepTimes, table_error

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
    assert times.tabled  # ReplicaModel states its steps as separable terms
    worst = table_error(times, samples=300, seed=1)
    assert max(worst.values()) <= 1e-9  # exact, not interpolated


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


def test_a_model_without_terms_is_called_directly() -> None:
    model = Scalar()
    times = StepTimes(model, 8192)
    assert not times.tabled and times.decode_line(3) is None
    assert times.decode(3, 5000) == model.decode_time(3, 5000)
    assert times.pieces(100, 100 * 50.0, 1, 0, 3, 5000) == model.mixed_time(100, 0, 3, 5000)
    assert np.isnan(table_error(times)["decode"])


@dataclass
class Linear(Scalar):
    """Steps that are exactly separable (``0.01 + 1e-5 n + 1e-4 s + max(1e-9 pairs, 2e-8 read)``)."""

    def step_terms(self) -> StepTerms:
        return StepTerms(lambda n: 0.01 + 1e-5 * np.asarray(n), lambda s: 1e-4 * np.asarray(s), 1e-9, 2e-8)

    def prefill_time(self, tokens: int, context: int) -> float:
        return 0.01 + 1e-5 * tokens + 1e-4 + max(1e-9 * tokens * (context + tokens / 2), 2e-8 * context)

    def decode_time(self, batch: int, total_context: int) -> float:
        return 0.01 + 1e-5 * batch + 1e-4 * batch + max(1e-9, 2e-8) * total_context

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        pairs = prefill_tokens * (prefill_context + prefill_tokens / 2) + total_context
        return (0.01 + 1e-5 * (prefill_tokens + batch) + 1e-4 * (batch + 1)
                + max(1e-9 * pairs, 2e-8 * (total_context + prefill_context)))


@dataclass
class Wrong(Linear):
    """Terms that do not reproduce its own mixed steps (the LM head forgotten): not trusted."""

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        return super().mixed_time(prefill_tokens, prefill_context, batch, total_context) - 1e-4 * (batch + 1)


def test_exact_terms_are_tabled_and_wrong_ones_are_not_trusted() -> None:
    times = StepTimes(Linear(), 4096)
    assert times.tabled and max(table_error(times, samples=200).values()) <= 1e-12
    assert times.decode(3, 10**6) == pytest.approx(Linear().decode_time(3, 10**6), rel=1e-12)
    assert not StepTimes(Wrong(), 4096).tabled


def test_tables_grow_past_their_first_size() -> None:
    times = StepTimes(Linear(), 16)
    big = 300_000  # a static batch of long prompts prefilled at once
    assert times.prefill(big, 0) == pytest.approx(Linear().prefill_time(big, 0), rel=1e-12)


def _replica() -> ReplicaModel:
    return ReplicaModel(load_model("llama3-70b"), hardware_for(load_system("dgx-h100")),
                        Deployment(tp=8, weights="fp8", kv_cache="fp8"))


def test_tabled_and_direct_runs_agree_when_each_step_prefills_one_prompt() -> None:
    """``max_batch=1``: one sequence at a time, so every prefill step holds one prompt, which the
    protocol's direct methods express exactly."""
    work = wl.poisson(20, 200, 1000, 200, seed=3, input_spread=0.5, output_spread=0.5)
    tabled = simulate(_replica(), work, max_batch=1)
    direct = simulate(_replica(), work, max_batch=1, step_tables=False)
    assert tabled.iterations == direct.iterations
    assert tabled.finish_s == pytest.approx(direct.finish_s, rel=1e-9)
    assert np.nanmean(tabled.ttft_s) == pytest.approx(np.nanmean(direct.ttft_s), rel=1e-9)
    assert np.nanmean(tabled.tpot_s) == pytest.approx(np.nanmean(direct.tpot_s), rel=1e-9)


def test_prompts_in_one_step_attend_over_their_own_sequences() -> None:
    replica = _replica()
    times = StepTimes(replica, 8192)
    terms = replica.step_terms()
    one = times.pieces(4096, 4096 * 2048.0, 1, 0)
    assert one == pytest.approx(replica.prefill_time(4096, 0), rel=1e-12)
    assert times.pieces(300, 300 * (500 + 150.0), 1, 500, 7, 9000) == pytest.approx(
        replica.mixed_time(300, 500, 7, 9000), rel=1e-12)
    four = times.pieces(4096, 4 * 1024 * 512.0, 4, 0)  # four 1,024-token prompts
    want = (float(terms.token_time(4096)) + float(terms.sequence_time(4))
            + terms.seconds_per_pair * 4 * 1024 * 512)
    assert four == pytest.approx(want, rel=1e-12)
    assert four < one  # a quarter of the attention of one 4,096-token prompt
    # a model called directly can only express one prompt: the pieces are costed as one
    direct = StepTimes(replica, 8192, tables=False)
    assert direct.pieces(4096, 4 * 1024 * 512.0, 4, 0) == pytest.approx(replica.prefill_time(4096, 0))


def test_several_prompts_per_step_make_a_tabled_run_no_slower() -> None:
    work = wl.poisson(20, 1500, 1000, 200, seed=3, input_spread=0.5, output_spread=0.5)
    tabled = simulate(_replica(), work)
    direct = simulate(_replica(), work, step_tables=False)
    assert np.nanmean(tabled.ttft_s) < np.nanmean(direct.ttft_s)  # less attention charged
