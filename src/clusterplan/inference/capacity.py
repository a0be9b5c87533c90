"""Serving capacity planning: one replica's speed, the replicas a demand needs at an SLO, and
what they cost.

The chain is: the step model (``inference/step.py``) times one replica's engine steps; the
request-level simulator (``inference/serving.py``) replays a Poisson workload through it and
finds the highest request rate at which the replica still meets the p99 TTFT and TPOT targets;
a demand in output tokens/s then needs ``ceil(demand / per-replica rate)`` replicas. Power uses
the cluster power model at the replica's activity (achieved FLOP share plus the waiting share,
``costs/power.py``); dollars use the cost of a chip-hour (``costs/money.py``), so the price per
million tokens is ``chips * $/chip-hour / (output tokens per hour) * 1e6``.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from clusterplan.costs.power import WAITING_ACTIVITY
from clusterplan.errors import SpecError
from clusterplan.inference.acceleration import ServingReplica, Speculation, serving_replica
from clusterplan.inference.serving import ServingLoad, max_rate_at_slo, sample, simulate
from clusterplan.inference.stacks import apply_stack
from clusterplan.inference.step import Deployment, ReplicaModel
from clusterplan.inference.workload import Workload
from clusterplan.specs import Model
from clusterplan.specs._base import Spec
from clusterplan.training.step import Hardware
from clusterplan.validation.bands import (
    Banded,
    attention_kernel_flags,
    banded,
    clock_flags,
    regime,
    stored_crossval,
)


class Slo(Spec):
    """Latency targets at the 99th percentile."""

    ttft_p99_s: float = Field(gt=0, le=3600, description="time to first token, p99 (s)")
    tpot_p99_s: float = Field(gt=0, le=60, description="time per output token after the first, p99 (s)")

    def furthest_off(self, ttft_s: float, tpot_s: float) -> tuple[str, float]:
        """The CLI flag of the target that ``ttft_s`` / ``tpot_s`` miss by the larger factor, and
        that target in ms: what a refusal names."""
        if ttft_s / self.ttft_p99_s >= tpot_s / self.tpot_p99_s:
            return "--slo-ttft", round(self.ttft_p99_s * 1000.0, 3)
        return "--slo-tpot", round(self.tpot_p99_s * 1000.0, 3)


def serving_activity(replica: ReplicaModel, output_tokens_per_s: float, input_tokens_per_s: float) -> float:
    """Accelerator activity while serving: the achieved share of peak FLOP/s (2 FLOPs per active
    parameter per processed token) plus WAITING_ACTIVITY of the rest (memory-bound decode keeps
    HBM busy)."""
    flops = 2.0 * replica.model.active_params * (output_tokens_per_s + input_tokens_per_s)
    peak = replica.deployment.chips * replica.peak_flops_per_chip
    used = min(1.0, flops / peak)
    return used + WAITING_ACTIVITY * (1.0 - used)


def serve_record(model: Model, hardware: Hardware, deployment: Deployment, input_tokens: int, output_tokens: int,
                 *, rate_per_s: float | None = None, slo: Slo | None = None,
                 demand_output_tokens_per_s: float | None = None, requests: int = 2000,
                 length_spread: float = 0.0, seed: int = 0, replay: Workload | None = None,
                 simulation: dict[str, Any] | None = None, speculation: Speculation | None = None,
                 draft_model: Model | None = None, prefix_cache_hit: float = 0.0) -> dict[str, Any]:
    """Everything ``clusterplan serve`` reports, SI units: the replica (memory, KV capacity),
    single-request latency, saturated throughput, a simulated run at ``rate_per_s``, the
    highest rate meeting ``slo``, and for a demand the replicas, chips, power and dollars.
    ``replay`` (a trace file, a closed loop or an offline batch) is simulated too.

    ``simulation`` holds :func:`~clusterplan.inference.serving.simulate`'s options (scheduler,
    replicas, router, admission, prefill_replicas, decode_replicas); the simulated runs and the SLO
    search then serve the whole unit they describe (a fleet behind a router, or prefill and decode
    pools), and a demand is met with whole units. Without an SLO, demand is sized on the analytic
    saturated rate of one replica, as before. ``speculation`` (with its ``draft_model``) and
    ``prefix_cache_hit`` turn on speculative decoding and prefix caching
    (:mod:`~clusterplan.inference.acceleration`); the record then has ``speculation`` /
    ``prefix_cache``."""
    options = dict(simulation or {})
    unit = _unit_replicas(options)
    if input_tokens < 1 or output_tokens < 1:
        raise SpecError("--input-tokens" if input_tokens < 1 else "--output-tokens",
                        min(input_tokens, output_tokens), "must be >= 1")
    # an engine stack (``deployment.stack``) fills the fields not set with its defaults, the neuron
    # buckets from this request shape (inference/stacks.py)
    deployment, stack = apply_stack(deployment, hardware, input_tokens, output_tokens,
                                    speculation.method if speculation is not None else None)
    replica = serving_replica(model, hardware, deployment, speculation=speculation, draft_model=draft_model,
                              prefix_cache_hit=prefix_cache_hit)
    # a sliding-window model's request holds kv_positions(length) token-equivalents (serving doc)
    if math.ceil(float(replica.kv_tokens(input_tokens + output_tokens))) > replica.kv_capacity_tokens:
        raise SpecError("--input-tokens", input_tokens,
                        f"a request of {input_tokens}+{output_tokens} tokens exceeds the replica's KV cache "
                        f"({replica.kv_capacity_tokens:,} tokens): use more chips per replica or an fp8 KV cache")
    steady = replica.offline_throughput(input_tokens, output_tokens)
    record: dict[str, Any] = {
        "model": model.name, "system": hardware.system.name, "chip": hardware.chip.name,
        # the chip's fitted sustained-clock ratio its prefill and decode kernels ran at
        "sustained_clock": hardware.efficiency.sustained_for(hardware.chip.name),
        # the prefill attention library's measured rate against the family's reference one
        "attention_kernel_rate": replica.attention_kernel_rate,
        "deployment": deployment.record(), "chips_per_replica": deployment.chips,
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "weights_bytes_per_chip": replica.weight_bytes_per_chip,
        "kv_bytes_per_token": replica.kv_per_token,
        # per replica; a PP replica splits it among its engines (micro-batches in flight)
        "kv_capacity_tokens": replica.kv_capacity_tokens * replica.engines, "engines": replica.engines,
        # an attention-DP rank's own sequences (the whole replica without attention DP), and the
        # replica's tokens per chip
        "kv_capacity_tokens_per_rank": replica.kv_capacity_tokens * replica.engines // deployment.attention_dp,
        "kv_capacity_tokens_per_chip": replica.kv_capacity_tokens * replica.engines / deployment.chips,
        **({"stack": stack} if stack is not None else {}),
        "single_request": {"ttft_s": replica.single_request_ttft(input_tokens),
                           "tpot_s": replica.decode_time(1, input_tokens + output_tokens // 2)},
        "saturated": {"batch": float(steady["batch"]),
                      "output_tokens_per_s": float(steady["output_tokens_per_s"]),
                      "output_tokens_per_s_per_chip": float(steady["output_tokens_per_s"]) / deployment.chips,
                      "requests_per_s": float(steady["output_tokens_per_s"]) / output_tokens},
    }
    if model.moe is not None:  # the MoE dispatch + combine of attention DP at the saturated batch
        all_to_all = float(replica.all_to_all_time(float(steady["batch"]) / replica.engines))
        record["saturated"]["all_to_all_s_per_decode_step"] = all_to_all
        record["saturated"]["all_to_all_share_of_decode_step"] = all_to_all / float(steady["decode_step_s"])

    def workload(rate: float) -> ServingLoad:
        return ServingLoad(rate_per_s=rate, requests=requests, input_tokens=input_tokens,
                        output_tokens=output_tokens, length_spread=length_spread, seed=seed)

    if rate_per_s is not None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
            raise SpecError("--rate", rate_per_s, "must be a finite number of requests/s > 0")
        record["simulated"] = _run(replica, sample(workload(rate_per_s)), slo, options)
    if replay is not None:
        record["replay"] = _run(replica, replay, slo, options)
    if options:
        record["simulation"] = {**options, "replicas_per_unit": unit}
    operating_rate = record["saturated"]["requests_per_s"]
    per_unit = 1
    if slo is not None:
        rate = max_rate_at_slo(replica, workload(operating_rate * unit), slo.ttft_p99_s, slo.tpot_p99_s, **options)
        record["slo"] = {**slo.model_dump(), "max_requests_per_s": rate,
                         "output_tokens_per_s": rate * output_tokens}
        if rate > 0:
            record["slo"]["at_max_rate"] = _run(replica, sample(workload(rate)), slo, options)
        operating_rate = rate
        per_unit = unit
    record["operating_requests_per_s"] = operating_rate
    if demand_output_tokens_per_s is not None:
        if operating_rate <= 0:
            alone = record["single_request"]
            assert slo is not None
            raise SpecError(*slo.furthest_off(alone["ttft_s"], alone["tpot_s"]),
                            f"no request rate meets p99 TTFT {slo.ttft_p99_s * 1000:g} ms and TPOT "
                            f"{slo.tpot_p99_s * 1000:g} ms on this replica (one request alone: TTFT "
                            f"{alone['ttft_s'] * 1000:.1f} ms, TPOT {alone['tpot_s'] * 1000:.2f} ms): loosen "
                            "the SLO, use more chips per replica, or let `clusterplan capacity` search")
        record["demand"] = plan_demand(replica, hardware, operating_rate, input_tokens, output_tokens,
                                       demand_output_tokens_per_s, per_unit)
    if isinstance(replica, ServingReplica):
        record.update(replica.record())
    record.update(serving_bands(hardware, record).record())
    return record


#: Figures of `serve` that scale with time (latencies; the chips, power and dollars a demand
#: needs) and with speed (throughputs, sustainable rates), as dotted paths into its record.
SERVE_TIMES = ("single_request.ttft_s", "single_request.tpot_s", "demand.chips", "demand.power_w.facility_w",
               "demand.cost_per_hour_usd", "demand.usd_per_million_output_tokens")
SERVE_RATES = ("saturated.output_tokens_per_s", "saturated.output_tokens_per_s_per_chip", "slo.max_requests_per_s",
               "slo.output_tokens_per_s")
#: The same for `capacity`'s best deployment.
CAPACITY_TIMES = ("best.chips", "best.power_w.facility_w", "best.usd_per_million_output_tokens")
CAPACITY_RATES = ("best.requests_per_s_per_replica",)


def _values(record: dict[str, Any], paths: tuple[str, ...]) -> dict[str, float]:
    """The finite numbers at ``paths`` (dotted keys) of a nested record."""
    found: dict[str, float] = {}
    for path in paths:
        node: Any = record
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, int | float) and not isinstance(node, bool) and math.isfinite(node):
            found[path] = float(node)
    return found


def serving_bands(hardware: Hardware, record: dict[str, Any], times: tuple[str, ...] = SERVE_TIMES,
                  rates: tuple[str, ...] = SERVE_RATES) -> Banded:
    """Error bands of a serving estimate from the cross-validated residuals of the chip family's
    serving rows (or, for a family without any, of the transfers), keyed by dotted path, and
    every extrapolation flag (inherited efficiencies, estimated prices)."""
    from clusterplan.catalog import load_economics
    from clusterplan.costs.money import price_flags

    costed = any(path.startswith(("demand.", "best.")) for path in _values(record, times))
    prices = price_flags(hardware.system, load_economics()) if costed else ()
    deployment = record.get("deployment") or (record.get("best") or {}).get("deployment") or {}
    attention_dp = int(deployment.get("attention_dp", 1)) > 1
    return banded(regime(stored_crossval(), hardware.chip.family, "serving", attention_dp=attention_dp),
                  _values(record, times), _values(record, rates),
                  clock_flags(hardware.chip.name, hardware.efficiency)
                  + attention_kernel_flags(str(deployment.get("attention_kernel", "auto")), hardware) + prices)


def _unit_replicas(options: dict[str, Any]) -> int:
    """Replicas in the unit the simulation options describe."""
    if options.get("scheduler") == "disaggregated":
        return int(options.get("prefill_replicas", 1)) + int(options.get("decode_replicas", 1))
    return int(options.get("replicas", 1))


def _run(replica: ReplicaModel, requests: Workload, slo: Slo | None, options: dict[str, Any]) -> dict[str, Any]:
    """One simulated run's record (:meth:`ServingResult.record`): percentiles, total (input +
    output) throughput, goodput and the share of requests that met both targets under the SLO
    (all of them without one), KV utilisation, preemptions."""
    result = simulate(replica, requests, **options)
    return result.record(slo.ttft_p99_s if slo else None, slo.tpot_p99_s if slo else None)


def plan_demand(replica: ReplicaModel, hardware: Hardware, rate: float, input_tokens: int, output_tokens: int,
                demand: float, per_unit: int = 1) -> dict[str, Any]:
    """Replicas, chips, power and dollars to serve ``demand`` output tokens/s at ``rate`` requests/s
    per unit of ``per_unit`` replicas. Systems without a capex figure get power only."""
    from clusterplan.catalog import load_economics
    from clusterplan.costs.money import cost_per_chip_hour
    from clusterplan.costs.power import cluster_power

    if not (demand > 0 and math.isfinite(demand)):
        raise SpecError("--demand", demand, "must be a finite number of output tokens/s > 0")
    if rate <= 0:
        raise SpecError("rate", rate, "must be > 0 requests/s per replica")
    per_replica = rate * output_tokens / per_unit
    replicas = math.ceil(demand / (rate * output_tokens)) * per_unit
    chips = replicas * replica.deployment.chips
    activity = serving_activity(replica, demand / replicas, demand / replicas * input_tokens / output_tokens)
    economics = load_economics()
    power = cluster_power(hardware.system, hardware.chip, chips, activity, economics)
    out: dict[str, Any] = {"output_tokens_per_s": demand, "replicas": replicas, "chips": chips,
                           "utilisation": demand / (replicas * per_replica), "activity": activity,
                           "power_w": power.record()}
    try:
        hourly = cost_per_chip_hour(hardware.system, hardware.chip, economics, activity)["total_usd"]
    except SpecError as missing:
        out["cost_note"] = str(missing)
        return out
    out["cost_per_hour_usd"] = hourly * chips
    out["usd_per_million_output_tokens"] = hourly * chips / (demand * 3600.0) * 1e6
    total_tokens = demand * (input_tokens + output_tokens) / output_tokens
    out["usd_per_million_total_tokens"] = hourly * chips / (total_tokens * 3600.0) * 1e6
    return out
