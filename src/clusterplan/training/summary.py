"""One plan's estimate as a plain record (the JSON of ``clusterplan train`` and the reports)."""

from __future__ import annotations

from typing import Any

from clusterplan.specs import Model, Plan
from clusterplan.training.batch import PlanBatch
from clusterplan.training.step import Hardware, StepEstimate, estimate
from clusterplan.validation.bands import (
    Banded,
    attention_kernel_flags,
    banded,
    clock_flags,
    mfu_flags,
    regime,
    setting_flags,
    stored_crossval,
)


def plan_record(plan: Plan) -> dict[str, Any]:
    return plan.model_dump(mode="json", exclude_none=True)


def train_record(model: Model, hardware: Hardware, plan: Plan, tokens: float | None = None,
                 max_memory_fraction: float = 1.0, with_failures: bool = True) -> dict[str, Any]:
    """Estimate one plan and return its figures in SI units (seconds, bytes, FLOP/s); with a
    token budget and ``with_failures``, also the time to train with failures at the catalog's
    default rates and recovery (``record["reliability"]``)."""
    result: StepEstimate = estimate(model, hardware, PlanBatch.from_plans([plan], model))
    memory = float(result.memory[0])
    capacity = hardware.chip.hbm_bytes * max_memory_fraction
    record: dict[str, Any] = {
        "model": model.name,
        "system": hardware.system.name,
        "chip": hardware.chip.name,
        "chips": plan.chips,
        "plan": plan_record(plan),
        "micro_batches": plan.micro_batches,
        "tokens_per_step": float(result.tokens_per_step[0]),
        "step_time_s": float(result.step_time[0]),
        "tokens_per_s_per_chip": float(result.tokens_per_s_per_chip[0]),
        "tokens_per_s": float(result.tokens_per_s_per_chip[0]) * plan.chips,
        "model_tflops_per_chip": float(result.model_flops_per_s_per_chip[0]) / 1e12,
        "mfu": float(result.mfu[0]),
        "hfu": float(result.hfu[0]),
        "memory_bytes_per_chip": memory,
        "memory_capacity_bytes": hardware.chip.hbm_bytes,
        "memory_breakdown": {k: float(v[0]) for k, v in result.memory_breakdown.items()},
        "fits_memory": bool(memory <= capacity),
        "time_breakdown_s": {k: float(v[0]) for k, v in result.time_breakdown.items()},
        "model_params": model.total_params,
        "model_active_params": model.active_params,
        # the chip's fitted sustained-clock ratio the kernels ran at (Efficiency.sustained_clock)
        "sustained_clock": hardware.efficiency.sustained_for(hardware.chip.name),
        # the fused-attention library and its measured rate against the family's reference one
        "attention_kernel": plan.attention_kernel if plan.flash_attention else "unfused",
        "attention_kernel_rate": hardware.attention_rate(plan.attention_kernel) if plan.flash_attention else 1.0,
        # the library `auto` means on this family, which the rate is relative to
        "attention_reference_kernel": hardware.attention_reference,
    }
    if tokens is not None:
        record["tokens"] = tokens
        record["time_to_train_s"] = tokens / record["tokens_per_s"]
        record["chip_hours"] = record["time_to_train_s"] * plan.chips / 3600.0
    record.update(_power_and_cost(hardware, plan.chips, record))
    if tokens is not None and with_failures:
        record["reliability"] = _with_failures(model, hardware, plan, record)
    record.update(training_bands(model, hardware, plan.chips, record).record())
    return record


#: Headline figures proportional to the step time, and to the speed, that carry a band.
BANDED_TIMES = ("step_time_s", "time_to_train_s", "chip_hours", "energy_mwh", "co2_tonnes", "cost_usd")
BANDED_RATES = ("tokens_per_s_per_chip", "tokens_per_s", "model_tflops_per_chip", "mfu", "hfu")


def training_bands(model: Model, hardware: Hardware, chips: int, record: dict[str, Any]) -> Banded:
    """Error bands of a training estimate from the cross-validated residuals of its regime
    (chip family; dense or mixture-of-experts; scale) and every extrapolation flag."""
    from clusterplan.catalog import load_economics
    from clusterplan.costs.money import price_flags

    summary, stage = stored_crossval(), "MoE" if model.moe is not None else "dense"
    found = regime(summary, hardware.chip.family, stage, chips)
    mfu = mfu_flags(summary, hardware.chip.family, stage, record["plan"]["precision"], record["mfu"])
    prices = price_flags(hardware.system, load_economics()) if "cost_per_chip_hour_usd" in record else ()
    return banded(found, {k: record[k] for k in BANDED_TIMES if k in record},
                  {k: record[k] for k in BANDED_RATES if k in record},
                  mfu + setting_flags(record["plan"]) + clock_flags(hardware.chip.name, hardware.efficiency)
                  + attention_kernel_flags(record["attention_kernel"], hardware)
                  + prices)


def _with_failures(model: Model, hardware: Hardware, plan: Plan, record: dict[str, Any]) -> dict[str, Any]:
    """Time to train with failures at the catalog's default rates and recovery (the closed form
    ``clusterplan reliability`` uses)."""
    from clusterplan.reliability.analysis import run_estimate

    estimate = run_estimate(model, hardware.system, plan, record["time_to_train_s"], record["step_time_s"])
    return dict(estimate.record())


def _power_and_cost(hardware: Hardware, chips: int, record: dict[str, Any]) -> dict[str, Any]:
    """Power while training, cost per chip-hour, and (with a token budget) the run's energy,
    emissions and dollars. Systems without a capex figure get power and energy only."""
    from clusterplan.catalog import load_economics
    from clusterplan.costs.money import cost_per_chip_hour, rented_record
    from clusterplan.costs.power import cluster_power, energy_record, training_activity
    from clusterplan.errors import SpecError

    economics = load_economics()
    activity = training_activity(record["time_breakdown_s"], record["step_time_s"])
    power = cluster_power(hardware.system, hardware.chip, chips, activity, economics)
    out: dict[str, Any] = {"activity": activity, "power_w": power.record()}
    try:
        hourly = cost_per_chip_hour(hardware.system, hardware.chip, economics, activity)
        out["cost_per_chip_hour_usd"] = hourly["total_usd"]
        out["cost_per_chip_hour_breakdown_usd"] = hourly
        # Owned TCO beside the public cloud price of the same chip (None where none is known).
        out.update(rented_record(hardware.system, economics))
    except SpecError as missing:
        out["cost_note"] = str(missing)
    if "time_to_train_s" in record:
        out.update(energy_record(power, record["time_to_train_s"], economics))
        if "cost_per_chip_hour_usd" in out:
            out["cost_usd"] = out["cost_per_chip_hour_usd"] * record["chip_hours"]
    return out
