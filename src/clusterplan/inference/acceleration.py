"""Speculative decoding and prefix caching on a serving replica.

**Speculative decoding** (``Speculation``). Each decode *iteration* of a sequence runs ``K`` steps
of a draft that propose ``K`` tokens, then one verify step of the target over the ``K + 1``
positions (the last accepted token and the ``K`` proposals), which accepts a prefix of the
proposals and adds one token of its own. With a per-token acceptance ``a`` (independent tokens),
the expected tokens per iteration are ``(1 - a**(K + 1)) / (1 - a)`` (``K + 1`` at ``a = 1``;
Leviathan, Kalman and Matias 2023, "Fast Inference from Transformers via Speculative Decoding",
ICML, eq. 1). The replica's decode step is stated *per token*: the iteration time over the
expected tokens, so TPOT, throughput and the simulator's decode steps (one token per sequence
each) all carry the speed-up in expectation.

* ``draft=MODEL``: a catalog model on the same chips (TP = gcd of the target's TP and the
  draft's attention heads, as small drafts have fewer heads), at the target's weight and KV
  formats; its weights and its KV cache of every sequence take HBM from the target's KV cache.
* ``mtp``: the target's own multi-token-prediction module, one extra transformer layer of the
  target's kind (MoE included) plus a ``2h x h`` projection, sharing the embedding and output
  head, run once per proposed token (DeepSeek-AI 2024, "DeepSeek-V3 Technical Report" §2.2).
* ``eagle``: a one-layer draft head on the target's features (``2h -> h`` fc, one decoder layer,
  the target's LM head; Li, Wei, Zhang and Zhang 2024, "EAGLE: Speculative Sampling Requires
  Rethinking Feature Uncertainty", ICML). Costed like ``mtp``: one target layer and the head per
  proposal, one layer's KV per token.

Draft step: the draft's own decode step over the sequences' context (its KV holds the same
tokens). Verify step: the target's step over ``b (K + 1)`` new tokens, causal attention of each
sequence's ``K + 1`` tokens over its context (``(K + 1) C + b (K + 1)**2 / 2`` query-key pairs,
every cached token read once) and the LM head on all ``b (K + 1)`` positions. A prompt is
prefilled by the target and the draft. A mixed step (chunked prefill) is today's mixed step with
its decode share replaced by the speculative one, plus the draft's prefill of the chunk. Not
modelled: the projection GEMM of mtp/eagle (``2h x h`` per token, under 1 % of a layer's FLOPs
for Llama shapes), tree drafts (EAGLE-2, Medusa), acceptance varying with position or context.
Pipeline-parallel replicas are refused with speculation.

**Prefix caching** (``prefix_cache_hit = F``): the first ``floor(F x prompt)`` tokens of each
prompt are found in the KV cache (vLLM automatic prefix caching: full blocks hashed by their
prefix, Kwon et al. 2023 and the vLLM design doc "Automatic Prefix Caching"; SGLang
RadixAttention, Zheng et al. 2024, "SGLang: Efficient Execution of Structured Language Model
Programs", NeurIPS). Prefill computes only the uncached tokens, as a continuation whose context
is the cached prefix: its attention still reads the prefix's K/V and attends over it. Memory:
per request. A running request's cached prefix occupies KV blocks for as long as it runs (vLLM
and SGLang reference-count the shared blocks, so the blocks are pinned while in use), so a
request's KV footprint is its whole prompt plus its output, as without caching; cached blocks of
finished requests sit in the free pool until evicted (vLLM: LRU of free blocks; SGLang: LRU of
radix-tree leaves) and take no capacity from running requests. This is exact for a prefix that
is each request's own (a conversation's earlier turns) and conservative for a prefix shared by
concurrent requests (a system prompt held once would free KV for more sequences).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from clusterplan.errors import SpecError
from clusterplan.inference.engine import StepTerms
from clusterplan.inference.stacks import apply_stack
from clusterplan.inference.step import Deployment, ReplicaModel, _seconds, weight_bytes
from clusterplan.specs import Model
from clusterplan.specs._base import Spec
from clusterplan.training.step import Hardware

#: The CLI option these settings come from (refusals name it).
SPECULATIVE_OPTION = "--speculative"
PREFIX_OPTION = "--prefix-cache-hit"


class Speculation(Spec):
    """Speculative decoding settings (module doc): the draft, ``tokens`` proposed per iteration
    (K) and the per-token acceptance rate."""

    method: Literal["draft", "mtp", "eagle"]
    draft: str | None = Field(default=None, description="catalog model name of the draft (method draft)")
    tokens: int = Field(ge=1, le=16, description="tokens proposed per iteration (K)")
    acceptance: float = Field(ge=0.0, le=1.0, description="probability that a proposed token is accepted")

    @model_validator(mode="after")
    def _draft_named(self) -> Speculation:
        if (self.method == "draft") != (self.draft is not None):
            raise ValueError("a draft model is named with draft=MODEL only (mtp and eagle use the target's own)")
        return self

    @property
    def expected_tokens(self) -> float:
        """Tokens per iteration: (1 - a^(K+1)) / (1 - a) (Leviathan et al. 2023, eq. 1)."""
        return float(expected_tokens(self.acceptance, self.tokens))


def expected_tokens(acceptance: Any, tokens: Any) -> Any:
    """Expected tokens a speculative iteration yields with ``tokens`` (K) proposals accepted
    each with probability ``acceptance`` (a): ``(1 - a**(K+1)) / (1 - a)``, ``K + 1`` at a = 1
    (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding", eq. 1)."""
    a = np.asarray(acceptance, dtype=np.float64)
    k = np.asarray(tokens, dtype=np.float64)
    safe = np.where(a < 1.0, a, 0.5)
    value = np.where(a < 1.0, (1.0 - safe ** (k + 1.0)) / (1.0 - safe), k + 1.0)
    return _seconds(value)


def parse_speculation(text: str, option: str = SPECULATIVE_OPTION) -> Speculation:
    """``draft=MODEL|mtp|eagle,tokens=K,acceptance=A`` -> :class:`Speculation`; a bad value is a
    :class:`SpecError` naming the option, the value and the rule."""
    parts: dict[str, str] = {}
    for item in str(text).split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not value.strip() or key.strip() not in ("draft", "tokens", "acceptance"):
            raise SpecError(option, text, "must be draft=MODEL|mtp|eagle,tokens=K,acceptance=A")
        if key.strip() in parts:
            raise SpecError(option, text, f"gives {key.strip()} twice")
        parts[key.strip()] = value.strip()
    missing = [key for key in ("draft", "tokens", "acceptance") if key not in parts]
    if missing:
        raise SpecError(option, text, f"lacks {', '.join(missing)} (draft=MODEL|mtp|eagle,tokens=K,acceptance=A)")
    try:
        tokens = int(parts["tokens"])
    except ValueError:
        raise SpecError(option, text, "tokens must be a whole number of proposed tokens, 1 to 16") from None
    try:
        acceptance = float(parts["acceptance"])
    except ValueError:
        raise SpecError(option, text, "acceptance must be a number in [0, 1]") from None
    if not 1 <= tokens <= 16:
        raise SpecError(option, text, "tokens must be 1 to 16 proposed tokens")
    if not 0.0 <= acceptance <= 1.0:  # NaN fails too
        raise SpecError(option, text, "acceptance must be a probability in [0, 1]")
    name = parts["draft"]
    method = name.lower() if name.lower() in ("mtp", "eagle") else "draft"
    return Speculation(method=method, draft=None if method != "draft" else name, tokens=tokens, acceptance=acceptance)


def check_prefix_cache_hit(value: Any, option: str = PREFIX_OPTION) -> float:
    """The fraction of each prompt found in the prefix cache: a number with 0 <= F < 1."""
    try:
        hit = float(value)
    except (TypeError, ValueError):
        raise SpecError(option, value, "must be a fraction of the prompt, 0 <= F < 1") from None
    if not 0.0 <= hit < 1.0:
        raise SpecError(option, value, "must be a fraction of the prompt, 0 <= F < 1 (a prompt's last token is "
                        "always computed)")
    return hit


def cached_tokens(prompt_tokens: Any, hit: float) -> Any:
    """Prompt tokens found in the cache: ``floor(F x prompt)``, at most ``prompt - 1``."""
    prompt = np.asarray(prompt_tokens, dtype=np.int64)
    return np.minimum(np.floor(hit * prompt).astype(np.int64), np.maximum(prompt - 1, 0))


def _one_layer(model: Model) -> Model:
    """The target's MTP module / EAGLE head as a model: one layer of the target's kind (an MoE
    layer for an MoE target), its embedding and head (shared with the target: no extra memory)."""
    data = model.model_dump()
    data.update(name=f"{model.name}-draft-layer", layers=1)
    if data.get("moe") is not None:
        data["moe"] = {**data["moe"], "dense_layers": 0}
    return Model.model_validate(data)


@dataclass
class ServingReplica(ReplicaModel):
    """A :class:`ReplicaModel` with speculative decoding and/or prefix caching (module doc)."""

    speculation: Speculation | None = None
    draft_model: Model | None = None
    prefix_cache_hit: float = 0.0
    draft: ReplicaModel | None = field(init=False, default=None)
    draft_weight_bytes_per_chip: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        spec = self.speculation
        if spec is None:
            return
        d = self.deployment
        if d.pp != 1:
            raise SpecError(SPECULATIVE_OPTION, spec.method, f"needs --pp 1 (got {d.pp}): speculative decoding "
                            "with pipeline parallelism is not modelled")
        if spec.method == "draft":
            if self.draft_model is None:
                raise SpecError(SPECULATIVE_OPTION, spec.draft, "the draft model was not loaded")
            draft_model = self.draft_model
            if draft_model.vocab_size != self.model.vocab_size:
                raise SpecError(SPECULATIVE_OPTION, spec.draft, f"the draft's vocabulary ({draft_model.vocab_size}) "
                                f"must be the target's ({self.model.vocab_size}) to verify its tokens")
            tp = math.gcd(d.tp, draft_model.attention_heads)
            extra_weights = weight_bytes(draft_model, d.weights) / tp
        else:
            draft_model = _one_layer(self.model)
            tp = d.tp
            kept = self.model.embedding_params + self.model.lm_head_params
            # one layer's share of the blocks, at the weights' width (embedding and head are bf16)
            layer = (weight_bytes(self.model, d.weights) - 2.0 * kept) / self.model.layers
            projection = 2.0 * self.model.hidden_size ** 2 * 2.0  # 2h x h at bf16
            extra_weights = (layer + projection) / tp
        self.draft = ReplicaModel(draft_model, self.hardware, Deployment(
            tp=tp, weights=d.weights, kv_cache=d.kv_cache, max_batch=d.max_batch, frontend="engine",
            prefill_buckets=d.prefill_buckets, decode_buckets=d.decode_buckets))
        self.draft_weight_bytes_per_chip = extra_weights
        # the draft's weights and its KV of every sequence share the HBM left for the target's KV
        usable = self.kv_budget_bytes(self.weight_bytes_per_chip, extra_weights)
        per_token = self._kv_read_per_token_per_chip + self.draft._kv_read_per_token_per_chip
        if usable <= 0:
            raise SpecError(SPECULATIVE_OPTION, spec.draft or spec.method, "the target's and the draft's weights "
                            "leave no room for a KV cache: use more chips per replica")
        self.kv_capacity_tokens = int(usable / per_token)

    # ---- speculative decoding -------------------------------------------------------------
    def step_terms(self) -> StepTerms | None:
        """Speculative steps are not of the separable form: the simulator calls the methods."""
        if self.speculation is not None:
            return None
        return super().step_terms()

    def iteration_time(self, batch: Any, total_context: Any) -> Any:
        """One speculative iteration of ``batch`` sequences holding ``total_context`` tokens: K
        draft decode steps and the target's verify step over K + 1 tokens per sequence."""
        spec, draft = self.speculation, self.draft
        assert spec is not None and draft is not None
        b = np.asarray(batch, dtype=np.float64)
        context = np.asarray(total_context, dtype=np.float64)
        width = spec.tokens + 1.0
        # the K + 1 verified tokens of each sequence attend as decoding tokens (the generation kernels)
        verify = self._step(b * width, 0.0, context, b * width, width * context + b * width * width / 2.0)
        return _seconds(spec.tokens * np.asarray(draft.decode_time(b, context)) + verify)

    def decode_time(self, batch: Any, total_context: Any) -> Any:
        """Per token: the iteration time over the expected tokens per iteration (module doc)."""
        if self.speculation is None:
            return super().decode_time(batch, total_context)
        return _seconds(np.asarray(self.iteration_time(batch, total_context)) / self.speculation.expected_tokens)

    def prefill_time(self, tokens: Any, context: Any) -> Any:
        target = super().prefill_time(tokens, context)
        if self.draft is None:
            return target
        return _seconds(np.asarray(target) + np.asarray(self.draft.prefill_time(tokens, context)))

    def mixed_time(self, prefill_tokens: Any, prefill_context: Any, batch: Any, total_context: Any) -> Any:
        mixed = super().mixed_time(prefill_tokens, prefill_context, batch, total_context)
        if self.draft is None:
            return mixed
        speculative = (np.asarray(self.decode_time(batch, total_context))
                       - np.asarray(super().decode_time(batch, total_context)))
        return _seconds(np.asarray(mixed) + speculative
                        + np.asarray(self.draft.prefill_time(prefill_tokens, prefill_context)))

    # ---- prefix caching and the analytic figures ------------------------------------------
    def single_request_ttft(self, prompt_tokens: Any) -> Any:
        """TTFT of a request alone: the prefill of its uncached tokens over its cached prefix."""
        cached = cached_tokens(prompt_tokens, self.prefix_cache_hit)
        fresh = np.asarray(prompt_tokens, dtype=np.float64) - cached
        return _seconds(np.asarray(self.prefill_time(fresh, cached)) + self.request_latency_s)

    def _cycle(self, batch: Any, isl: Any, osl: Any) -> tuple[Any, Any]:
        """Decode step (per token) and the batch's prefill of its uncached prompt tokens."""
        mean_context = batch * (isl + osl / 2.0)
        decode = self.decode_time(batch, mean_context)
        cached = np.asarray(cached_tokens(isl, self.prefix_cache_hit), dtype=np.float64)
        fresh = isl - cached
        prefill = self._step(batch * fresh, batch * fresh * (cached + fresh / 2.0), batch * cached, batch)
        if self.draft is not None:
            draft = self.draft
            prefill = prefill + draft._step(batch * fresh, batch * fresh * (cached + fresh / 2.0), batch * cached,
                                            batch)
        return decode, prefill

    def record(self) -> dict[str, Any]:
        """The settings and their derived figures for ``serve --json`` (SI units)."""
        out: dict[str, Any] = {}
        spec = self.speculation
        if spec is not None:
            out["speculation"] = {
                "method": spec.method, "draft": spec.draft, "tokens": spec.tokens, "acceptance": spec.acceptance,
                "expected_tokens_per_iteration": spec.expected_tokens,
                "draft_weight_bytes_per_chip": self.draft_weight_bytes_per_chip,
                "draft_kv_bytes_per_token": self.draft.kv_per_token if self.draft is not None else 0.0}
        if self.prefix_cache_hit:
            out["prefix_cache"] = {"hit_fraction": self.prefix_cache_hit, "kv_accounting": "per request"}
        return out


def serving_replica(model: Model, hardware: Hardware, deployment: Deployment, *,
                    speculation: Speculation | None = None, draft_model: Model | None = None,
                    prefix_cache_hit: float = 0.0) -> ReplicaModel:
    """The replica's step model: a plain :class:`ReplicaModel` without either mechanism (so the
    output is today's exactly), else a :class:`ServingReplica`."""
    # an engine stack's defaults may depend on the speculation (SGLang's memory reserve)
    deployment = apply_stack(deployment, hardware, speculation=speculation.method if speculation else None)[0]
    if speculation is None and not prefix_cache_hit:
        return ReplicaModel(model, hardware, deployment)
    return ServingReplica(model, hardware, deployment, speculation=speculation, draft_model=draft_model,
                          prefix_cache_hit=check_prefix_cache_hit(prefix_cache_hit))
