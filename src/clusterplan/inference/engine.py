"""The contract between the inference step estimator and the serving simulator.

A replica is described to the simulator only by how long its engine steps take and how much KV
cache it holds; the simulator never looks at models or chips. ``inference/step.py`` builds the
real one from specs; tests may build simple ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class StepModel(Protocol):
    """Timing of one serving replica's engine steps (seconds) and its KV capacity (tokens)."""

    #: KV-cache capacity of the replica in tokens (all sequences' prompt + generated tokens).
    kv_capacity_tokens: int
    #: Most sequences the engine batches at once (engine limit).
    max_batch: int
    # Optional ``engines: int`` (default 1): engines one replica runs at once, each with these
    # step times and KV capacity (a pipeline-parallel replica's micro-batches in flight); the
    # simulator serves them as members of the fleet.
    # Optional ``request_latency_s: float`` (default 0): latency outside the engine's steps
    # (server, tokenisation, streaming), added to every request's TTFT and end-to-end latency.
    # Optional ``windowed: bool`` and ``kv_tokens(length) -> array``: a sliding-window model's KV
    # per sequence of ``length`` tokens, in tokens of ``kv_capacity_tokens`` (below ``length``);
    # the simulator reserves ``ceil(kv_tokens(prompt + output))`` per request.
    # Optional ``step_terms() -> StepTerms | None``: the step times below as separable terms,
    # which the simulator tabulates (``inference/steptimes.py``) instead of calling the methods.

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


@dataclass(frozen=True)
class StepTerms:
    """A step model whose every step time is

    ``token_time(n) + sequence_time(s) + max(seconds_per_pair * pairs + seconds_per_decode_pair
    * decode_pairs, seconds_per_kv_token * read)``

    for ``n`` new tokens, ``s`` sampled sequences, ``pairs`` query-key pairs of prompts,
    ``decode_pairs`` of decoding sequences and ``read`` cached tokens read. ``token_time`` and
    ``sequence_time`` take NumPy arrays. The steps of :class:`StepModel` map onto it as: decode
    ``(b, C)`` -> ``n = s = b``, ``decode_pairs = read = C``; prefill ``(P, c)`` -> ``n = P``,
    ``s = 1``, ``pairs = P (c + P/2)`` (causal), ``read = c``; mixed ``(P, c, b, C)`` ->
    ``n = P + b``, ``s = b + 1``, ``pairs = P (c + P/2)``, ``decode_pairs = C``, ``read = C + c``."""

    token_time: Callable[[Any], Any]
    sequence_time: Callable[[Any], Any]
    seconds_per_pair: float
    seconds_per_kv_token: float
    #: per query-key pair of a decoding sequence (``None``: ``seconds_per_pair``); multi-head
    #: latent attention decodes in the weight-absorbed form, which costs more per pair
    seconds_per_decode_pair: float | None = None
