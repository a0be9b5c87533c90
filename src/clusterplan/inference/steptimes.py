"""Step times for the serving simulator: exact tables of a step model's separable terms, or direct calls.

The simulator asks a :class:`~clusterplan.inference.engine.StepModel` for one step time per engine
iteration, hundreds of thousands of times per run. :class:`~clusterplan.inference.step.ReplicaModel`
computes each with NumPy, which costs ~40 us per scalar call (NumPy's per-call overhead, not
arithmetic), so a run of 20,000 requests would spend most of its time there. A model that states
its steps as :class:`~clusterplan.inference.engine.StepTerms` (``token_time(n) +
sequence_time(s) + max(seconds_per_pair * pairs + seconds_per_decode_pair * decode_pairs,
seconds_per_kv_token * read)``) is instead
tabulated: ``token_time`` and ``sequence_time`` are evaluated once per count, in a few array calls
(grown by doubling when a run needs larger counts), and every decode, prefill and mixed step is two
list reads, two products and a ``max``, with no interpolation: the tables give the model's own
numbers (``tests/test_steptimes.py`` checks them to 1e-9 against direct calls).

The tables are trusted only after they reproduce the model's own ``decode_time``,
``prefill_time`` and ``mixed_time`` at probe points; a model without terms (or with terms that disagree) is called
directly for every step, decode and prefill times memoised (a StepModel must be a pure function
of its arguments).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from clusterplan.inference.engine import StepModel, StepTerms

#: Counts beyond which a term is a direct call instead of a table entry (bounds table memory).
TABLE_LIMIT = 1 << 21
#: Entries a memo of direct calls holds before it is emptied (bounds memory on huge runs).
_CACHE_LIMIT = 1 << 20
#: Relative agreement demanded of the terms against the model's own step methods.
_AGREE = 1e-9


class _Table:
    """``fn(0), fn(1), ...`` as a list, grown by doubling (array calls) up to ``TABLE_LIMIT``."""

    def __init__(self, fn: Any, size: int) -> None:
        self.fn = fn
        self.values: list[float] = []
        self.grow(size)

    def grow(self, size: int) -> None:
        size = min(max(size, 2 * len(self.values), 64), TABLE_LIMIT)
        counts = np.arange(len(self.values), size, dtype=np.float64)
        self.values.extend(np.asarray(self.fn(counts), dtype=np.float64).tolist())

    def __call__(self, count: int) -> float:
        if count < len(self.values):
            return self.values[count]
        if count < TABLE_LIMIT:
            self.grow(count + 1)
            return self.values[count]
        return float(np.asarray(self.fn(np.array([count], dtype=np.float64)))[0])


class StepTimes:
    """Step times of one model for one simulation (see module doc). ``tabled`` says which path."""

    def __init__(self, model: StepModel, prefill_tokens: int, *, tables: bool = True) -> None:
        self.model = model
        self.cap = int(model.kv_capacity_tokens)
        self.max_batch = int(model.max_batch)
        self.tabled = False
        self._decode_memo: dict[int, float] = {}
        self._prefill_memo: dict[tuple[int, int], float] = {}
        self._stride = self.max_batch + 1
        make: Any = getattr(model, "step_terms", None)
        terms = make() if tables and make is not None else None
        if not isinstance(terms, StepTerms):
            return
        self.per_pair = terms.seconds_per_pair
        self.per_decode_pair = (terms.seconds_per_pair if terms.seconds_per_decode_pair is None
                                else terms.seconds_per_decode_pair)
        self.per_read = terms.seconds_per_kv_token
        # a decode step reads every cached token and attends over each once: one slope
        self.decode_slope = max(self.per_decode_pair, self.per_read)
        self._tokens = _Table(terms.token_time, self.max_batch + max(int(prefill_tokens), 1) + 1)
        self._sequences = _Table(terms.sequence_time, self.max_batch + 2)
        self.tabled = True  # the probes below must read the tables, not the model
        self.tabled = self._agrees_with_model()

    def _agrees_with_model(self) -> bool:
        """Whether the tabled steps reproduce the model's own step methods at probe points
        (small and large batches, empty and full contexts, one prompt with and without decodes)."""
        model, cap, top = self.model, max(self.cap, 1), max(self.max_batch, 1)
        try:
            pairs = [(self.decode(b, c), model.decode_time(b, c))
                     for b, c in ((1, min(cap, 1000)), (top, max(cap // 2, top)))]
            for tokens, done, batch, context in ((1, 0, 0, 0), (4096, 0, 0, 0), (512, min(cap // 2, 20_000), 0, 0),
                                                 (256, 0, 1, min(cap, 500)), (2048, 1000, top, max(cap // 3, top))):
                want = model.mixed_time(tokens, done, batch, context) if batch else model.prefill_time(tokens, done)
                pairs.append((self.pieces(tokens, tokens * (done + tokens * 0.5), 1, done, batch, context), want))
            return all(math.isclose(got, float(want), rel_tol=_AGREE, abs_tol=0.0) for got, want in pairs)
        except (TypeError, ValueError, AttributeError, IndexError):
            return False

    # ---- decode ----------------------------------------------------------------------------
    def decode_line(self, batch: int) -> tuple[float, float] | None:
        """``(base, slope)`` with ``decode(batch, context) == base + slope * context`` exactly
        (``None`` when the model is called directly)."""
        if not self.tabled:
            return None
        return self._tokens(batch) + self._sequences(batch), self.decode_slope

    def decode(self, batch: int, context: int) -> float:
        if self.tabled:
            return self._tokens(batch) + self._sequences(batch) + self.decode_slope * context
        key = context * self._stride + batch
        dt = self._decode_memo.get(key)
        if dt is None:
            if len(self._decode_memo) >= _CACHE_LIMIT:
                self._decode_memo.clear()
            dt = self._decode_memo[key] = self.model.decode_time(batch, context)
        return dt

    # ---- steps with prompt tokens --------------------------------------------------------------
    def prefill(self, tokens: int, context: int) -> float:
        """A prefill of ``tokens`` of one prompt whose sequence already holds ``context``."""
        if self.tabled:
            return self.pieces(tokens, tokens * (context + tokens * 0.5), 1, context)
        key = (tokens, context)
        dt = self._prefill_memo.get(key)
        if dt is None:
            if len(self._prefill_memo) >= _CACHE_LIMIT:
                self._prefill_memo.clear()
            dt = self._prefill_memo[key] = self.model.prefill_time(tokens, context)
        return dt

    def pieces(self, tokens: int, pairs: float, sequences: int, read: int, batch: int = 0, context: int = 0) -> float:
        """A step that prefills ``sequences`` prompt pieces (``tokens`` in all, ``pairs`` causal
        query-key pairs among them and their sequences' ``read`` cached tokens) while decoding
        ``batch`` sequences holding ``context``. Exact with terms: each piece attends over its own
        sequence only. A model called directly sees the pieces as one prompt of ``tokens`` (its
        step methods take one), which over-counts their attention."""
        if self.tabled:
            read = read + context
            flops_bound = self.per_pair * pairs + self.per_decode_pair * context
            attention = flops_bound if flops_bound > self.per_read * read else self.per_read * read
            return self._tokens(tokens + batch) + self._sequences(sequences + batch) + attention
        if batch:
            return self.model.mixed_time(tokens, read, batch, context)
        return self.prefill(tokens, read)


def table_error(times: StepTimes, samples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Largest relative difference of the tabled decode, prefill and mixed times from direct calls
    at ``samples`` random points each (any batch, context the KV holds, prompt up to 16,384
    tokens). NaN when the model is not tabled."""
    if not times.tabled:
        return {"decode": math.nan, "prefill": math.nan, "mixed": math.nan}
    rng = np.random.default_rng(seed)
    model, cap, top = times.model, max(times.cap, 1), times.max_batch
    worst = {"decode": 0.0, "prefill": 0.0, "mixed": 0.0}
    for _ in range(samples):
        batch = int(rng.integers(1, top + 1))
        context = int(rng.integers(batch, max(cap, batch) + 1))
        tokens = int(rng.integers(1, 16_385))
        done = int(rng.integers(0, cap + 1))
        pairs = (("decode", times.decode(batch, context), model.decode_time(batch, context)),
                 ("prefill", times.prefill(tokens, done), model.prefill_time(tokens, done)),
                 ("mixed", times.pieces(tokens, tokens * (done + tokens / 2.0), 1, done, batch, context),
                  model.mixed_time(tokens, done, batch, context)))
        for name, got, want in pairs:
            worst[name] = max(worst[name], abs(got / want - 1.0))
    return worst
