"""The contract between the inference step estimator and the serving simulator.

A replica is described to the simulator only by how long its engine steps take and how much KV
cache it holds; the simulator never looks at models or chips. ``inference/step.py`` builds the
real one from specs; tests may build simple ones.
"""

from __future__ import annotations

from typing import Protocol


class StepModel(Protocol):
    """Timing of one serving replica's engine steps (seconds) and its KV capacity (tokens)."""

    #: KV-cache capacity of the replica in tokens (all sequences' prompt + generated tokens).
    kv_capacity_tokens: int
    #: Most sequences the engine batches at once (engine limit).
    max_batch: int
    # Optional ``engines: int`` (default 1): engines one replica runs at once, each with these
    # step times and KV capacity (a pipeline-parallel replica's micro-batches in flight); the
    # simulator serves them as members of the fleet.

    def prefill_time(self, tokens: int, context: int) -> float:
        """One prefill step over ``tokens`` new prompt tokens whose sequences already hold
        ``context`` tokens in total (chunked prefill continues a prompt)."""
        ...

    def decode_time(self, batch: int, total_context: int) -> float:
        """One decode step generating one token for each of ``batch`` sequences that hold
        ``total_context`` tokens of KV cache together."""
        ...

    def mixed_time(self, prefill_tokens: int, prefill_context: int, batch: int, total_context: int) -> float:
        """One step that decodes ``batch`` sequences and prefills ``prefill_tokens`` tokens
        together (continuous batching with chunked prefill)."""
        ...

    def kv_transfer_time(self, tokens: int) -> float:
        """Moving ``tokens`` tokens of KV cache from a prefill replica to a decode replica
        (disaggregated serving)."""
        ...
