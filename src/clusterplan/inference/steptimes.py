"""Step times for the serving simulator: tables built with array calls, or direct calls.

The simulator asks a :class:`~clusterplan.inference.engine.StepModel` for one step time per engine
iteration, hundreds of thousands of times per run. :class:`ReplicaModel` computes each with NumPy,
which costs ~37 us per scalar call (NumPy's per-call overhead, not arithmetic), so a run of 20,000
requests would spend most of its time there. When the model can be evaluated on arrays, this module
instead evaluates it once per table cell, in a few large array calls made lazily (only for the
regions a run visits), and the simulator reads the tables:

* ``decode_time(batch, context)``: exact in ``batch`` (one row per batch size, rows built 64 at a
  time) and linear in ``context`` between ``CONTEXT_CELLS`` equal cells over the KV capacity.
  For ReplicaModel a decode step is a sum of kernels of which only attention depends on the
  context, as ``max(FLOP time, KV-read time)``: both linear in the context, so the
  interpolation is exact except in the one cell per row where they cross.
* ``prefill_time(tokens, 0)``: exact, one entry per token count up to the chunk (or prefill) budget.

Mixed steps (prefill chunk + decodes) and anything outside the tables (a prefill continuing a
partly prefilled prompt, a step larger than the budget) are direct calls.
``tests/test_steptimes.py`` bounds the interpolation error against direct calls (<= 0.5 %; under
0.1 % on the catalog replicas tried). Models whose methods do not take arrays (or give different
numbers on arrays) are called directly for every step, decode and prefill times memoised (a
StepModel must be a pure function of its arguments).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clusterplan.inference.engine import StepModel

FloatArray = NDArray[np.float64]
ArrayFn = Callable[..., Any]

#: Equal context cells of a decode-table row (over the KV capacity).
CONTEXT_CELLS = 256
#: Batch sizes per lazily built block of decode rows.
ROW_BLOCK = 64
#: Largest token count the exact prefill table covers.
PREFILL_TABLE_LIMIT = 65_536
#: Entries a memo of direct calls holds before it is emptied (bounds memory on huge runs).
_CACHE_LIMIT = 1 << 20
#: Relative agreement demanded of array evaluation against the model's own scalar methods.
_AGREE = 1e-9


def array_methods(model: StepModel) -> tuple[ArrayFn, ArrayFn] | None:
    """The model's ``(decode, prefill)`` step-time methods when they take NumPy arrays and agree
    with their own scalar calls on probe points, else ``None`` (the model is then called
    directly)."""
    cap, top = int(model.kv_capacity_tokens), int(model.max_batch)
    methods: tuple[ArrayFn, ArrayFn] = (model.decode_time, model.prefill_time)
    probes = {
        0: ((1, top), (min(cap, 1000), max(cap // 2, 1))),
        1: ((1, 4096), (0, 0)),
    }
    try:
        for which, columns in probes.items():
            got = np.asarray(methods[which](*(np.asarray(c, dtype=np.float64) for c in columns)), dtype=np.float64)
            want = np.array([methods[which](*(int(c[i]) for c in columns)) for i in range(2)])
            if got.shape != (2,) or not np.allclose(got, want, rtol=_AGREE, atol=0.0):
                return None
    except (TypeError, ValueError, AttributeError):
        return None
    return methods


class StepTimes:
    """Step times of one model for one simulation (see module doc). ``tabled`` says which path."""

    def __init__(self, model: StepModel, prefill_tokens: int, *, tables: bool = True) -> None:
        self.model = model
        self.cap = int(model.kv_capacity_tokens)
        self.max_batch = int(model.max_batch)
        arrays = array_methods(model) if tables else None
        self.tabled = arrays is not None
        self._decode_memo: dict[int, float] = {}
        self._prefill_memo: dict[tuple[int, int], float] = {}
        self._stride = self.max_batch + 1
        if arrays is None:
            return
        self._decode_fn, self._prefill_fn = arrays
        # decode rows: context points k * width for k = 0 .. CONTEXT_CELLS + 1 (one spare cell)
        self.context_width = max(self.cap, 1) / CONTEXT_CELLS
        self.inv_context_width = 1.0 / self.context_width
        self._rows: list[list[float] | None] = [None] * (self.max_batch + 1)
        # prefill from empty, exact per token count
        self._prefill_limit = min(max(int(prefill_tokens), 1), PREFILL_TABLE_LIMIT)
        self._prefill_row: list[float] | None = None

    # ---- decode ----------------------------------------------------------------------------
    def decode_row(self, batch: int) -> list[float] | None:
        """Decode times of ``batch`` sequences at context ``k * context_width`` (``None`` when the
        model is called directly). Read as ``row[i] + (row[i + 1] - row[i]) * (x - i)`` with
        ``x = context * inv_context_width``, ``i = int(x)``."""
        if not self.tabled:
            return None
        row = self._rows[batch]
        if row is None:
            start = (batch - 1) // ROW_BLOCK * ROW_BLOCK + 1
            stop = min(start + ROW_BLOCK, self.max_batch + 1)
            points = CONTEXT_CELLS + 2
            batches = np.repeat(np.arange(start, stop, dtype=np.float64), points)
            contexts = np.tile(np.arange(points, dtype=np.float64) * self.context_width, stop - start)
            values = np.asarray(self._decode_fn(batches, contexts), dtype=np.float64).reshape(stop - start, points)
            for offset, line in enumerate(values.tolist()):
                self._rows[start + offset] = line
            row = self._rows[batch]
            assert row is not None
        return row

    def decode(self, batch: int, context: int) -> float:
        row = self.decode_row(batch)
        if row is not None and context <= self.cap:
            x = context * self.inv_context_width
            i = int(x)
            a = row[i]
            return a + (row[i + 1] - a) * (x - i)
        if row is not None:  # beyond the table (a caller past the KV capacity): ask the model
            return self.model.decode_time(batch, context)
        key = context * self._stride + batch
        dt = self._decode_memo.get(key)
        if dt is None:
            if len(self._decode_memo) >= _CACHE_LIMIT:
                self._decode_memo.clear()
            dt = self._decode_memo[key] = self.model.decode_time(batch, context)
        return dt

    # ---- prefill ---------------------------------------------------------------------------
    def prefill(self, tokens: int, context: int) -> float:
        if self.tabled and context == 0 and tokens <= self._prefill_limit:
            row = self._prefill_row
            if row is None:
                counts = np.arange(self._prefill_limit + 1, dtype=np.float64)
                row = self._prefill_row = np.asarray(
                    self._prefill_fn(counts, np.zeros_like(counts)), dtype=np.float64).tolist()
            return row[tokens]
        key = (tokens, context)
        dt = self._prefill_memo.get(key)
        if dt is None:
            if len(self._prefill_memo) >= _CACHE_LIMIT:
                self._prefill_memo.clear()
            dt = self._prefill_memo[key] = self.model.prefill_time(tokens, context)
        return dt

    # ---- mixed ----------------------------------------------------------------------------
    def mixed(self, tokens: int, prefill_context: int, batch: int, context: int) -> float:
        """Always a direct call: a mixed step depends on four numbers, and a compute/memory crossing
        runs diagonally through any grid of them, so a table fine enough for 0.5 % is larger than
        the calls it would save (see docs/serving.md, simulator speed)."""
        return self.model.mixed_time(tokens, prefill_context, batch, context)


def interpolation_error(times: StepTimes, samples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Largest relative error of the tabled decode and prefill times against direct calls at
    ``samples`` random points each (decode over any batch and context the KV holds, prefill up to
    the table's budget). NaN when the model is not tabled."""
    if not times.tabled:
        return {"decode": math.nan, "prefill": math.nan}
    rng = np.random.default_rng(seed)
    model, cap, top = times.model, times.cap, times.max_batch
    worst = {"decode": 0.0, "prefill": 0.0}
    for _ in range(samples):
        batch = int(rng.integers(1, top + 1))
        context = int(rng.integers(batch, max(cap, batch) + 1))
        tokens = int(rng.integers(1, times._prefill_limit + 1))
        pairs = (("decode", times.decode(batch, context), model.decode_time(batch, context)),
                 ("prefill", times.prefill(tokens, 0), model.prefill_time(tokens, 0)))
        for name, got, want in pairs:
            worst[name] = max(worst[name], abs(got / want - 1.0))
    return worst
