"""Collective communication time on a hierarchy of fabric tiers (alpha-beta per tier).

A parallel group is described by its size ``g`` and rank stride ``s`` (rank placement puts TP
innermost, then CP, DP, PP). Walking the tiers from the innermost out, ``n_t`` group members
share one domain of tier ``t``; the group's collective runs hierarchically: a reduce-scatter
inside each tier on the data left by the tier below, then the mirrored all-gather
(Thakur et al. 2005; NCCL's NVLS/tree and Megatron's hierarchical schemes follow this shape).
Each tier phase costs ``bytes*(g_t-1)/g_t / bandwidth_t + steps_t * latency_t``.

Latency steps differ by collective. NCCL runs reduce-scatter and all-gather as a ring over all
``g`` members (its only algorithm for them on multi-GPU nodes; PAT needs one GPU per node), so
a switched tier takes one step per ring hop whose endpoints first meet at that tier:
``(g_t - 1) * g / (g_1 * ... * g_t)`` of the ``g - 1`` hops, e.g. 448 NVLink and 63 network hops
for 512 GPUs in 64 nodes; NCCL's own cost model charges the same ``nsteps - nInterSteps``
intra-node and ``nInterSteps = nNodes - 1`` network hops (``src/graph/tuning.cc``,
``ncclTopoTuneModel``). An all-reduce takes the cheaper latency of that ring twice and of a
tree's ``2*ceil(log2 g_t)`` steps per tier (NCCL's tuner picks the faster; trees win at scale);
the all-to-all keeps the tree's steps. Torus tiers (Trainium
NeuronLink, TPU ICI) run bidirectional rings along each dimension the group spans: they achieve
``k/d`` of the tier bandwidth when the group spans ``k`` of the ``d`` dimensions and take
``sum(dim_len - 1)`` steps, which is why a sub-torus group is slower than a full one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clusterplan.specs.system import System

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class TierPhases:
    """Per-tier decomposition of a batch of groups: arrays shaped (tiers, plans)."""

    fan: FloatArray  # g_t: members joined at this tier (1 = tier not used)
    before: FloatArray  # product of fans of inner tiers (data shrink factor for RS)
    bandwidth: FloatArray  # achieved bytes/s per chip at this tier for this group
    steps: FloatArray  # tree latency steps of half an all-reduce at this tier
    latency: FloatArray  # seconds per step
    ring_steps: FloatArray  # ring hops of one reduce-scatter (or all-gather) at this tier


def _domain_sizes(system: System, group_span: Any) -> list[Any]:
    """Chips per domain of each tier; the unbounded outer tier spans the group."""
    sizes: list[Any] = []
    for tier in system.tiers:
        sizes.append(tier.size if tier.size is not None else np.maximum(group_span, 1))
    return sizes


def decompose(system: System, size: Any, stride: Any) -> TierPhases:
    """Split groups of ``size`` members spaced ``stride`` ranks apart across the tiers."""
    g = np.asarray(size, dtype=np.float64)
    s = np.asarray(stride, dtype=np.float64)
    span = s * g
    tiers = system.tiers
    count = len(tiers)
    fan = np.ones((count, g.size))
    before = np.ones((count, g.size))
    bandwidth = np.ones((count, g.size))
    steps = np.zeros((count, g.size))
    latency = np.zeros((count, g.size))
    inner_members = np.ones_like(g)
    inner_domain = 1.0
    for index, (tier, domain) in enumerate(zip(tiers, _domain_sizes(system, span), strict=True)):
        domain_f = np.asarray(domain, dtype=np.float64)
        members = np.where(s < domain_f, np.minimum(np.maximum(np.floor(domain_f / s), 1.0), g), 1.0)
        members = np.maximum(members, inner_members)
        if index == count - 1:
            members = g
        fan_t = members / inner_members
        fan[index] = fan_t
        before[index] = inner_members
        latency[index] = tier.latency_s
        if tier.topology == "torus":
            fraction, ring_steps = _torus_usage(tier.dims, inner_domain, s, fan_t)
            bandwidth[index] = tier.effective_bandwidth * fraction
            steps[index] = ring_steps
        else:
            bandwidth[index] = tier.effective_bandwidth
            steps[index] = np.ceil(np.log2(np.maximum(fan_t, 1.0)))
        inner_members = members
        inner_domain = float(tier.size) if tier.size is not None else inner_domain
    # A flat ring's hops whose endpoints first share a tier-t domain: (fan_t - 1) per tier-t
    # domain, of which the group has g / (before_t * fan_t). Torus tiers already count ring hops.
    torus = np.array([[tier.topology == "torus"] for tier in tiers])
    ring_steps = np.where(torus, steps, (fan - 1.0) * g / (before * fan))
    return TierPhases(fan=fan, before=before, bandwidth=bandwidth, steps=steps, latency=latency,
                      ring_steps=ring_steps)


def _torus_usage(dims: tuple[int, ...], unit: float, stride: Any, fan: Any) -> tuple[Any, Any]:
    """Fraction of a torus tier's bandwidth a group uses, and its ring steps.

    Ranks fill the torus dimension by dimension (first dimension fastest); ``unit`` is the
    number of chips one torus position holds (the inner domain size).
    """
    d = len(dims)
    spanned = np.zeros_like(np.asarray(fan, dtype=np.float64))
    ring_steps = np.zeros_like(spanned)
    period = unit
    reach = stride * (fan - 1.0)
    for length in dims:
        spans = (reach >= period) & (stride < period * length) & (fan > 1)
        spanned += spans
        ring_steps += np.where(spans, np.minimum(length, fan) - 1.0, 0.0)
        period *= length
    fraction = np.maximum(spanned, 1.0) / d
    return fraction, ring_steps


def _transfer_time(phases: TierPhases, message_bytes: Any) -> FloatArray:
    """Bandwidth time of a hierarchical reduce-scatter (or all-gather) of ``message_bytes``."""
    data = np.asarray(message_bytes, dtype=np.float64) / phases.before
    fan = phases.fan
    result: FloatArray = np.where(fan > 1.0, data * (fan - 1.0) / fan / phases.bandwidth, 0.0).sum(axis=0)
    return result


def _latency_time(phases: TierPhases, steps: FloatArray) -> FloatArray:
    result: FloatArray = np.where(phases.fan > 1.0, steps * phases.latency, 0.0).sum(axis=0)
    return result


def reduce_scatter_time(phases: TierPhases, message_bytes: Any) -> FloatArray:
    """Reduce-scatter of ``message_bytes`` per chip (its full, unsharded buffer): the
    hierarchical bandwidth time plus one latency per ring hop (module docstring)."""
    return _transfer_time(phases, message_bytes) + _latency_time(phases, phases.ring_steps)


def all_gather_time(phases: TierPhases, message_bytes: Any) -> FloatArray:
    """All-gather producing ``message_bytes`` per chip: the mirror of reduce-scatter."""
    return reduce_scatter_time(phases, message_bytes)


def all_reduce_time(phases: TierPhases, message_bytes: Any) -> FloatArray:
    """Reduce-scatter then all-gather (bandwidth-optimal), with the latency of the cheaper of
    the ring and the tree (NCCL's tuner picks by the same alpha-beta comparison)."""
    latency = np.minimum(_latency_time(phases, phases.ring_steps), _latency_time(phases, phases.steps))
    result: FloatArray = 2.0 * (_transfer_time(phases, message_bytes) + latency)
    return result


def all_to_all_time(phases: TierPhases, message_bytes: Any) -> FloatArray:
    """All-to-all where each chip holds ``message_bytes`` spread evenly over the group.

    The share bound for peers first reached at tier ``t`` crosses that tier's links; tiers
    work concurrently, so the slowest tier sets the time (plus its latency steps).
    """
    data = np.asarray(message_bytes, dtype=np.float64)
    total = phases.before * phases.fan  # members reached up to and including tier t
    group = total[-1]
    crossing = data * (total - phases.before) / group
    per_tier = crossing / phases.bandwidth + phases.steps * phases.latency
    result: FloatArray = np.where(phases.fan > 1.0, per_tier, 0.0).max(axis=0)
    return result


def p2p_time(system: System, stride: Any, message_bytes: Any) -> FloatArray:
    """Point-to-point send between ranks ``stride`` apart (pipeline neighbours)."""
    s = np.asarray(stride, dtype=np.float64)
    data = np.asarray(message_bytes, dtype=np.float64)
    result = np.zeros(np.broadcast(s, data).shape)
    assigned = np.zeros(result.shape, dtype=bool)
    for tier in system.tiers:
        domain = math.inf if tier.size is None else float(tier.size)
        here = (~assigned) & (s < domain)
        # A point-to-point stream uses one direction of one path: a torus tier gives it the
        # links of one dimension.
        share = 1.0 / len(tier.dims) if tier.topology == "torus" else 1.0
        time = tier.latency_s + data / (tier.effective_bandwidth * share)
        result = np.where(here, time, result)
        assigned |= here
    return result


def _none_picked(total: Any, held: Any, picks: int) -> FloatArray:
    """Hypergeometric probability that ``picks`` distinct draws from ``total`` items miss all
    ``held`` of them: ``C(total - held, picks) / C(total, picks)`` (Feller 1968, ch. II.6)."""
    held_items = np.asarray(held, dtype=np.float64)
    none = np.ones_like(held_items)
    for i in range(picks):
        none = none * np.maximum(total - held_items - i, 0.0) / (total - i)
    result: FloatArray = none
    return result


def _choose(n: Any, j: int) -> FloatArray:
    """``C(n, j)`` for real ``n`` (the falling factorial over ``j!``), 0 where ``n < j``."""
    result = np.ones_like(np.asarray(n, dtype=np.float64))
    for i in range(j):
        result = result * np.maximum(np.asarray(n, dtype=np.float64) - i, 0.0) / (i + 1)
    return result


def expert_hit_probability(experts: int, top_k: int, share: Any, groups: int = 1,
                           groups_per_token: int = 1) -> FloatArray:
    """Probability that a token's ``top_k`` distinct experts pick at least one of the
    ``share * experts`` experts a unit of EP ranks holds.

    Uniform routing: one minus the hypergeometric probability of no pick,
    ``C(E - E*share, k) / C(E, k)``. Group-limited routing (DeepSeek-V2/V3 ``n_group`` /
    ``topk_group``, arXiv:2412.19437 section 2.1.2: a token goes to at most ``groups_per_token``
    of the ``groups`` expert groups, one group per node in DeepSeek-V3's deployment): the token
    picks ``groups_per_token`` groups, then its experts among their ``S`` experts. A unit of
    whole groups is hit when ``j >= 1`` of its groups are picked (hypergeometric over groups) and
    one of their ``j`` groups' experts then is; a unit inside one group when its group is picked
    and then one of its experts. Groups are taken as picked uniformly (balanced routing) and EP
    units as aligned with them (Megatron-Core places experts contiguously; a unit straddling
    groups is approximated through the real-valued binomials)."""
    held = np.asarray(share, dtype=np.float64) * experts
    if groups_per_token >= groups:
        result: FloatArray = 1.0 - _none_picked(experts, held, top_k)
        return result
    per_group = experts / groups
    reachable = groups_per_token * per_group
    inside = groups_per_token / groups * (1.0 - _none_picked(reachable, held, top_k))
    whole = held / per_group
    across = np.zeros_like(held)
    for j in range(1, groups_per_token + 1):
        chosen = _choose(whole, j) * _choose(groups - whole, groups_per_token - j) / math.comb(groups, groups_per_token)
        across = across + chosen * (1.0 - _none_picked(reachable, j * per_group, top_k))
    result = np.where(held >= per_group, across, inside)
    return result


def fp8_token_bytes(hidden: int) -> float:
    """Bytes of one token's hidden state dispatched in FP8 with one fp32 scale per 128 channels
    (DeepEP's normal and low-latency dispatch, github.com/deepseek-ai/DeepEP; DeepSeek-V3 report
    arXiv:2412.19437 section 3.3: activations are quantised before the dispatch)."""
    return float(hidden + 4.0 * math.ceil(hidden / 128))


def expert_dispatch_bytes(phases: TierPhases, tokens: Any, token_bytes: float, experts: int, top_k: int,
                          dedup: bool = True, groups: int = 1, groups_per_token: int = 1) -> FloatArray:
    """Bytes per chip crossing each tier in one MoE dispatch (or its mirrored combine) over an EP
    group decomposed into ``phases``; each chip sends ``tokens`` tokens of ``token_bytes``.
    Shape (tiers, groups).

    ``dedup`` (DeepEP normal kernels, github.com/deepseek-ai/DeepEP; DeepSeek-V3 report,
    arXiv:2412.19437 section 3.2.2): a token crosses tier ``t`` once per *domain* of the tier
    below that holds one of its experts (once per destination node over InfiniBand, then
    forwarded over NVLink to each destination GPU), so the chip-average traffic of tier ``t`` is
    ``tokens * bytes * p_hit(u_t) * (fan_t - 1) * G / total_t``, with ``u_t`` the group members
    below tier ``t``, ``total_t`` those up to it, ``G`` the group and ``p_hit``
    (:func:`expert_hit_probability`) the chance a token picks an expert in a given unit: every
    (token, destination unit) copy crosses each tier's links once, first or forwarded.
    Without it (a flat all-to-all), each of the ``top_k`` copies goes straight to its expert's
    chip: ``tokens * bytes * top_k * (total_t - u_t) / G``. ``groups``, ``groups_per_token``:
    group-limited routing (:func:`expert_hit_probability`); it changes only where the flat
    dispatch's copies go, not how many cross each tier."""
    data = np.asarray(tokens, dtype=np.float64) * token_bytes
    total = phases.before * phases.fan
    group = total[-1]
    if dedup:
        hit = expert_hit_probability(experts, top_k, phases.before / group, groups, groups_per_token)
        crossing = data * hit * (phases.fan - 1.0) * group / total
    else:
        crossing = data * top_k * (total - phases.before) / group
    result: FloatArray = np.where(phases.fan > 1.0, crossing, 0.0)
    return result


def expert_all_to_all_time(phases: TierPhases, tokens: Any, token_bytes: float, experts: int, top_k: int,
                           dedup: bool = True, imbalance: Any = 1.0, groups: int = 1,
                           groups_per_token: int = 1) -> FloatArray:
    """One MoE dispatch (or combine) over an EP group: each tier carries its bytes
    (:func:`expert_dispatch_bytes`) at once, so the slowest tier sets the time, as in
    :func:`all_to_all_time`, plus its latency steps. ``imbalance``: the busiest rank's share of
    the routed tokens over the mean (it receives, and returns, that much more)."""
    crossing = expert_dispatch_bytes(phases, tokens, token_bytes, experts, top_k, dedup, groups, groups_per_token)
    per_tier = crossing * np.asarray(imbalance, dtype=np.float64) / phases.bandwidth + phases.steps * phases.latency
    result: FloatArray = np.where(phases.fan > 1.0, per_tier, 0.0).max(axis=0)
    return result


#: Streaming multiprocessors a GPU's communication kernels occupy while they run beside compute:
#: DeepSeek-V3's all-to-all kernels saturate InfiniBand and NVLink with 20 of the H800's 132 SMs
#: (arXiv:2412.19437, sections 3.2.2 and 3.5.1). NCCL's collectives (DP reductions and gathers,
#: the CP ring, pipeline sends) and the expert all-to-all are taken to need as many (an NCCL
#: all-gather on H100 launches 24 blocks; compute beside collectives runs 18.9 % slower on average
#: on A100/H100/MI250/MI210, Lee et al. 2025, arXiv:2507.03114).
COMMUNICATION_UNITS = 20
#: Transformer Engine's TP overlap (userbuffers) runs its all-gathers as a ring exchange on the
#: copy engines with 1 SM and its reduce-scatters (pipelined and bulk) on 16 SMs
#: (``initialize_ub`` defaults: ``num_sm = 1 if method == "ring_exchange" else 16``,
#: transformer_engine/pytorch/module/base.py): about 8 over a layer's collectives.
TP_OVERLAP_UNITS = 8


def overlap_compute_share(compute_units: int | None, units: int = COMMUNICATION_UNITS) -> float:
    """Fraction of a chip's compute that an overlapped collective holding ``units`` SMs/CUs
    takes while it runs (:data:`COMMUNICATION_UNITS`: H100 0.15, B200 0.14;
    :data:`TP_OVERLAP_UNITS`: H100 0.06); 0 where collectives run on engines of their own
    (``compute_units`` None: TPU ICI, Trainium, Gaudi)."""
    if compute_units is None:
        return 0.0
    return min(units / compute_units, 0.5)


def overlapped_exposure(comm: Any, cover: Any, share: float) -> FloatArray:
    """Time that communication ``comm`` adds to the compute ``cover`` it overlaps.

    While the collective runs it holds ``share`` of the compute units, so the compute beside it
    proceeds at ``1 - share``: the pair takes ``max(comm, cover + share*comm)``, and the added
    time is ``max(comm - cover, share*comm)``: what outlasts the compute, or, when the compute
    hides it, the compute it slowed. ``share`` 0 is the ideal overlap ``max(comm - cover, 0)``.
    """
    comm_time = np.asarray(comm, dtype=np.float64)
    result: FloatArray = np.maximum(comm_time - cover, share * comm_time)
    return result
