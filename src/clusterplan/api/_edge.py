"""Input rules at the edge, shared by the CLI, the API requests and the web planner.

Every refusal is a :class:`SpecError` naming the field (as the CLI spells it: ``--tp``), the value
and the rule; the web answers it with HTTP 422 and the same one line."""

from __future__ import annotations

import math
from typing import Any, TypeVar

from pydantic import ValidationError

from clusterplan import units
from clusterplan.errors import SpecError
from clusterplan.specs import Model, Plan
from clusterplan.specs._base import Spec
from clusterplan.specs.plan import MAX_CHIPS
from clusterplan.training.command import field_options

SpecT = TypeVar("SpecT", bound=Spec)

def finite(value: Any) -> Any:
    """JSON has no infinity: a quantity that never finishes is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value



def parse_tokens(value: str | None) -> float | None:
    if value is None:
        return None
    tokens = units.parse_count(value, "--tokens")
    if not math.isfinite(tokens) or tokens <= 0:
        raise SpecError("--tokens", value, "must be > 0")
    return tokens


#: Plan fields as the CLI spells them, so refusals name the flag the user typed.
FLAGS = {"seq_len": "--seq", "global_batch": "--global-batch", "micro_batch": "--micro-batch",
         "first_stage_layers": "--first-stage-layers", "last_stage_layers": "--last-stage-layers",
         "dp_shard": "--dp-shard", "rate_per_s": "--rate"}


def flag(field: str) -> str:
    """The CLI option a Plan (or Deployment) field is given by (``seq_len`` -> ``--seq``)."""
    return FLAGS.get(field, field if field.startswith("--") else f"--{field.replace('_', '-')}")



def spec_or_refuse(spec_type: type[SpecT], data: dict[str, Any], origins: dict[str, str]) -> SpecT:
    try:
        return spec_type(**data)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "plan"
        raise SpecError(origins.get(field, flag(field)), first.get("input"), str(first["msg"])) from None


def build_plan(options: dict[str, Any], chips: int, model: Model | None = None,
               origins: dict[str, str] | None = None) -> Plan:
    """A validated Plan from CLI (and ``--plan`` file) options; ``dp`` defaults to
    chips / (tp*pp*cp), ``sp`` to tp > 1. With ``model``: the balanced layer split when none is
    given and pp*vp does not divide the layers, then the plan validated for the model."""
    origins = origins or {}

    def name(field: str) -> str:
        return origins.get(field, flag(field))

    if chips > MAX_CHIPS:
        raise SpecError("--chips", chips, f"must be <= {MAX_CHIPS:,} (absurd size)")
    if chips < 1:
        raise SpecError("--chips", chips, "must be >= 1")
    for field in ("tp", "pp", "vp", "cp", "dp", "ep", "etp", "micro_batch", "global_batch", "seq_len"):
        value = options.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise SpecError(name(field), value, "must be >= 1")
    for field in ("seq_len", "global_batch"):
        if options.get(field) is None:
            raise SpecError(flag(field), None, f"required: give {flag(field)} or {field} in --plan FILE.yaml")
    draft = spec_or_refuse(Plan, {**options, "dp": options.get("dp") or 1, "sp": options.get("sp", False)},
                            origins)
    if draft.precision == "fp32":
        raise SpecError(name("precision"), draft.precision, "must be one of bf16, fp8, fp4 (matmul precision)")
    inner = draft.tp * draft.pp * draft.cp
    dp = options.get("dp")
    if dp is None:
        if chips % inner != 0:
            raise SpecError("--chips", chips,
                            f"must be divisible by tp*pp*cp = {draft.tp}*{draft.pp}*{draft.cp} = {inner}")
        dp = chips // inner
    plan = spec_or_refuse(Plan, {**options, "dp": dp, "sp": options.get("sp", draft.tp > 1)}, origins)
    if model is None:
        return plan
    try:
        return plan.with_balanced_split(model).validate_for(model, chips)
    except SpecError as error:
        raise error.renamed(name(error.field)) from None



def does_not_fit(record: dict[str, Any]) -> str:
    """Why a train record's plan cannot run: memory per chip, the chip's HBM, the largest part,
    and what may help (one line): the fastest setting left open that makes it fit (from the
    record's ``assumed`` list), else the general remedies."""
    plan = record["plan"]
    layout = " ".join(f"{name.upper()}{plan[name]}" for name in ("tp", "pp", "vp", "cp", "dp", "ep")
                      if name in ("tp", "pp", "dp") or plan.get(name, 1) > 1)
    parts = record["memory_breakdown"]
    largest = max(parts, key=parts.get)
    return (f"does not fit in memory: {record['model']} {layout} needs "
            f"{units.format_bytes(record['memory_bytes_per_chip'])} per chip, {record['chip']} has "
            f"{units.format_bytes(record['memory_capacity_bytes'])} (largest: {largest} "
            f"{units.format_bytes(parts[largest])}); {_fitting_setting(record)}")


def _fitting_setting(record: dict[str, Any]) -> str:
    """'left open, `--recompute full` fits (step +31 %); or try ...': the setting the user did
    not give whose change fits in memory at the smallest step time (layer splits aside)."""
    remedies = "try more chips, --zero, --tp/--pp, --recompute or `clusterplan search`"
    fitting = [item for item in record.get("assumed", [])
               if item.get("fits_memory_if_changed") and item["field"] != "layer_split"]
    if not fitting:
        return remedies
    best = min(fitting, key=lambda item: item["step_time_s_if_changed"])
    option = " ".join(field_options(best["field"], best["alternative"]))
    return f"left open, `{option}` fits (step {100 * best['step_change']:+.0f} %); or {remedies}"



def csv_items(value: str, field: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    if not items:
        raise SpecError(field, value, "must list at least one value, comma-separated")
    return items


#: Plan fields every searched plan shares (options and --plan); the search enumerates the rest.
SEARCH_SETTINGS = ("overlap_tp", "overlap_dp", "overlap_pp", "flash_attention", "attention_kernel", "grad_reduce",
                   "optimizer_moments",
                   "recompute_modules",
                   "routing_gini", "capacity_factor", "overlap_ep", "ep_dedup",
                   "mtp", "fp8_params", "fused_cross_entropy",
                   "loss_chunks", "offload_qkv", "offload_modules")
#: Plan fields the search takes as lists of values to consider (comma-separated).
SEARCH_AXES = ("precision", "recompute", "zero")



def search_limits(deadline: str | None, budget: str | None, max_chips: int | None,
                   tokens: str | None) -> tuple[float | None, float | None]:
    """--deadline in seconds and --budget in USD (None when not given); bad values, and
    --max-chips out of range, are refused in one line."""
    deadline_s = budget_usd = None
    if deadline is not None:
        rule = "must be a duration > 0 with a unit h, d, w or y, e.g. 90d"
        try:
            deadline_s = units.parse_duration(deadline, "--deadline")
        except SpecError:
            raise SpecError("--deadline", deadline, rule) from None
        if deadline.strip()[-1:].isdigit() or not (math.isfinite(deadline_s) and deadline_s > 0):
            raise SpecError("--deadline", deadline, rule)
    if budget is not None:
        rule = "must be US dollars > 0 with an optional k, M or B suffix, e.g. 50M"
        try:
            budget_usd = units.parse_usd(budget, "--budget")
        except SpecError:
            raise SpecError("--budget", budget, rule) from None
        if not (math.isfinite(budget_usd) and budget_usd > 0):
            raise SpecError("--budget", budget, rule)
    if max_chips is not None and not 1 <= max_chips <= MAX_CHIPS:
        raise SpecError("--max-chips", max_chips, f"must be between 1 and {MAX_CHIPS:,}")
    for name, given in (("--deadline", deadline), ("--budget", budget)):
        if given is not None and tokens is None:
            raise SpecError(name, given, "needs --tokens (the training tokens, e.g. 15T)")
    return deadline_s, budget_usd



#: Most requests `serve` simulates in one run, and `capacity` per listed deployment (--requests x
#: --top): each simulation is repeated by the rate search, 10^5 requests take seconds.
MAX_SIMULATED_REQUESTS = 100_000



def slo_seconds(value: str | None, field: str) -> float | None:
    """A p99 latency target: ``2s``, ``100ms``, ``1.5s``; a bare number is milliseconds."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text) / 1000.0
    except ValueError:
        seconds = units.parse_duration(text, field)
    if not (math.isfinite(seconds) and 0 < seconds <= 3600):
        raise SpecError(field, value, "must be a latency in (0, 1 h], e.g. 2s, 100ms (a bare number is ms)")
    return seconds


def output_rate(value: str, field: str = "--demand") -> float:
    """Output tokens/s as users write them: ``5e6``, ``5M``, ``5Mtok/s``, ``5e6 tokens/s``."""
    text = value.strip()
    for suffix in ("tokens/s", "token/s", "tok/s"):
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)].strip()
            break
    tokens = units.parse_count(text, field)
    if not (math.isfinite(tokens) and tokens > 0):
        raise SpecError(field, value, "must be a finite number of output tokens/s > 0")
    if tokens > 1e12:
        raise SpecError(field, value, "must be <= 1e12 output tokens/s (absurd size)")
    return tokens



def parse_buckets(value: str | None, field: str) -> tuple[int, ...]:
    """Comma-separated token counts (``2048,4096``); none when the option is not given."""
    if value is None:
        return ()
    try:
        return tuple(int(count) for count in csv_items(value, field))
    except ValueError:
        raise SpecError(field, value, "must list whole token counts, comma-separated, e.g. 2048,4096") from None


def serve_simulation(scheduler: str, admission: str, replicas: int, router: str, prefill_replicas: int | None,
                      decode_replicas: int | None, max_num_tokens: int | None = None) -> dict[str, Any]:
    """``serve``'s simulator options, checked together; only those differing from the default.
    ``max_num_tokens``, the engine's per-step token budget, is the chunked scheduler's
    ``chunk_tokens`` (decodes included) and the prefill-step cap ``max_prefill_tokens`` of the
    continuous and disaggregated ones."""
    from clusterplan.inference.serving import ADMISSIONS, SCHEDULERS

    if scheduler not in SCHEDULERS:
        raise SpecError("--scheduler", scheduler, f"must be one of {' | '.join(SCHEDULERS)}")
    if admission not in ADMISSIONS:
        raise SpecError("--admission", admission, f"must be one of {' | '.join(ADMISSIONS)}")
    if router not in ("round-robin", "least-loaded"):
        raise SpecError("--router", router, "must be one of round-robin | least-loaded")
    if replicas < 1:
        raise SpecError("--replicas", replicas, "must be >= 1")
    options: dict[str, Any] = {}
    if scheduler == "disaggregated":
        if replicas != 1:
            raise SpecError("--replicas", replicas, "with --scheduler disaggregated, size the pools with "
                            "--prefill-replicas and --decode-replicas")
        for name, count in (("--prefill-replicas", prefill_replicas), ("--decode-replicas", decode_replicas)):
            if count is not None and count < 1:
                raise SpecError(name, count, "must be >= 1")
        options.update(prefill_replicas=prefill_replicas or 1, decode_replicas=decode_replicas or 1)
    else:
        for name, count in (("--prefill-replicas", prefill_replicas), ("--decode-replicas", decode_replicas)):
            if count is not None:
                raise SpecError(name, count, "only applies with --scheduler disaggregated")
    if scheduler != "chunked":
        options["scheduler"] = scheduler
    if max_num_tokens is not None:
        if isinstance(max_num_tokens, bool) or not isinstance(max_num_tokens, int) or max_num_tokens < 1:
            raise SpecError("--max-num-tokens", max_num_tokens, "must be a whole number of tokens >= 1")
        if scheduler == "static":
            raise SpecError("--max-num-tokens", max_num_tokens,
                            "does not apply with --scheduler static (a batch prefills whole)")
        options["chunk_tokens" if scheduler == "chunked" else "max_prefill_tokens"] = max_num_tokens
    if admission != "reserve":
        options["admission"] = admission
    if replicas != 1:
        options["replicas"] = replicas
    if router != "round-robin":
        options["router"] = router.replace("-", "_")
    return options




def json_text(record: Any) -> str:
    """The text ``--json`` prints for ``record``: one JSON object, indented, infinities as null,
    and a final newline."""
    import json

    return json.dumps(finite(record), indent=2, sort_keys=False, allow_nan=False) + "\n"
