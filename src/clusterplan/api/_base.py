"""What every planning question shares: a frozen request validated at the edge, and a frozen
answer holding its headline figures typed and the full record (the ``--json`` object)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from clusterplan.api._edge import json_text, output_rate, parse_tokens, slo_seconds
from clusterplan.errors import SpecError


class Request(BaseModel):
    """A planning question: frozen, unknown fields refused. Values may come as the CLI takes
    them (``15T`` tokens, ``2s`` latencies): the validators parse them, and a bad one is a
    SpecError naming the CLI option, the value and the rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        """Validate; a value one of the edge parsers refused raises its SpecError as it is (the
        CLI's one line), not wrapped in pydantic's ValidationError."""
        try:
            super().__init__(**data)
        except ValidationError as error:
            for item in error.errors():
                original = (item.get("ctx") or {}).get("error")
                if isinstance(original, SpecError):
                    raise original from None
            raise


class Answer(BaseModel):
    """A planning answer: frozen; ``record`` is the whole JSON object of the CLI's ``--json``
    (docs/json.md), the typed fields its headline figures."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    record: dict[str, Any]

    def to_json(self) -> str:
        """Exactly what ``clusterplan <command> --json`` prints (one object and a newline)."""
        return json_text(self.record)


def demand_field(value: Any) -> Any:
    """An output-token demand as the CLI takes it (``5M``, ``5Mtok/s``) or a number."""
    return output_rate(value) if isinstance(value, str) else value


def latency_field(value: Any, field_name: str) -> Any:
    """A p99 latency target as the CLI takes it (``2s``, a bare string number: ms) or seconds;
    numbers go through the same range rule as the CLI's text."""
    option = "--slo-ttft" if field_name == "slo_ttft_s" else "--slo-tpot"
    if isinstance(value, str):
        return slo_seconds(value, option)
    if isinstance(value, float | int) and not isinstance(value, bool):
        slo_seconds(f"{value}s", option)
    return value


def tokens_field(value: Any) -> float | None:
    """``--tokens``: a count with an optional suffix (``15T``), > 0; None when not given."""
    return None if value is None else parse_tokens(value if isinstance(value, str) else str(value))


class PlanOptions(BaseModel):
    """The Plan fields given (each None when left open: the Plan default, or the search's
    choice). Types are loose on purpose: the rules are the Plan's, applied by ``build_plan`` so
    a refusal names the option (``--tp``) as the CLI does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tp: int | None = None
    pp: int | None = None
    vp: int | None = None
    cp: int | None = None
    dp: int | None = None
    ep: int | None = None
    etp: int | None = None
    capacity_factor: float | None = None
    routing_gini: float | None = None
    overlap_ep: bool | None = None
    ep_dedup: bool | None = None
    ep_within_scale_up: bool | None = None
    mtp: int | None = None
    micro_batch: int | None = None
    global_batch: int | None = None
    seq_len: int | None = None
    recompute: str | None = None
    recompute_modules: tuple[str, ...] | None = None
    sp: bool | None = None
    zero: int | None = None
    dp_shard: int | None = None
    precision: str | None = None
    fp8_params: bool | None = None
    offload_qkv: bool | None = None
    offload_layers: int | None = None
    offload_modules: tuple[str, ...] | None = None
    fused_cross_entropy: bool | None = None
    loss_chunks: int | None = None
    grad_reduce: str | None = None
    optimizer_moments: str | None = None
    overlap_dp: bool | None = None
    overlap_tp: bool | None = None
    overlap_pp: bool | None = None
    flash_attention: bool | None = None
    attention_kernel: str | None = None
    first_stage_layers: int | None = None
    last_stage_layers: int | None = None

    @field_validator("recompute_modules", mode="before")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        from clusterplan.api._edge import csv_items

        return csv_items(value, "--recompute-modules") if isinstance(value, str) else value

    @field_validator("offload_modules", mode="before")
    @classmethod
    def _offloaded(cls, value: Any) -> Any:
        from clusterplan.api._edge import csv_items

        return csv_items(value, "--offload-modules") if isinstance(value, str) else value

    def given(self) -> dict[str, Any]:
        """The fields given, in Plan order (those left None are not listed)."""
        return {name: value for name, value in self.model_dump().items() if value is not None}
