"""How does a fleet grow, quarter by quarter? (``clusterplan fleet``)"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field, field_validator

from clusterplan import units
from clusterplan.api._base import Answer, Request
from clusterplan.catalog import load_scenario
from clusterplan.fleet.timeline import (
    backtest,
    check_envelopes,
    parse_scenario,
    reference_runs,
    timeline,
)
from clusterplan.specs.scenario import FleetScenario


def with_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fleet scenario mapping ``data`` with what-if ``overrides`` applied (a copy):
    ``capex_scale`` multiplies every quarter's capex, ``ai_share`` replaces every company's,
    ``power_envelope_w`` caps every quarter's facility power, ``capex_to_online_quarters``
    replaces the lag. None (or absent) keeps the scenario's value."""
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if not given:
        return data
    data = copy.deepcopy(data)
    if "capex_to_online_quarters" in given:
        data["capex_to_online_quarters"] = given["capex_to_online_quarters"]
    for company in data.get("companies") or []:
        if not isinstance(company, dict):
            continue
        if "ai_share" in given:
            company["ai_share"] = given["ai_share"]
        for quarter in company.get("quarters") or []:
            if not isinstance(quarter, dict):
                continue
            if "capex_scale" in given:
                capex = units.parse_count(quarter.get("capex_usd", 0), "capex_usd")
                quarter["capex_usd"] = capex * given["capex_scale"]
            if "power_envelope_w" in given:
                quarter["power_envelope_w"] = given["power_envelope_w"]
    return data


def fleet_scenario(reference: str, overrides: Mapping[str, Any] | None = None) -> FleetScenario:
    """A fleet scenario by built-in name or YAML path, checked (a Rainier-style scenario's
    ``fleet:`` section when present), with what-if ``overrides`` (:func:`with_overrides`)."""
    data = load_scenario(reference, "fleet")
    if isinstance(data.get("fleet"), dict):
        data = data["fleet"]
    scenario = parse_scenario(with_overrides(data, overrides), reference)
    check_envelopes(scenario)
    return scenario


def fleet_records(reference: str, runs: bool = True, progress: Callable[[str], None] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The timeline of a built-in scenario name or a YAML path (a Rainier-style scenario's
    ``fleet:`` section is used when present). ``progress(text)`` is told each plan search."""
    scenario = fleet_scenario(reference, overrides)
    records = timeline(scenario)
    if runs and scenario.reference_run is not None:
        searched: dict[tuple[str, int], dict[str, Any] | None] = {}  # the same searches, once
        info = reference_runs(scenario, records, cache=searched, progress=progress)
        records = timeline(scenario, info["mfu_by_system"])
        reference_runs(scenario, records, cache=searched, progress=progress)
    return scenario.name, records



class FleetRequest(Request):
    """A fleet scenario: a built-in name (amazon-2025, hyperscalers-2025, rainier) or, from the
    CLI, a YAML path; ``runs``: search the reference run each quarter."""

    scenario: str
    runs: bool = Field(True, description="search the reference run each quarter")
    capex_scale: float | None = Field(None, gt=0, le=100, allow_inf_nan=False,
                                      description="what-if: every quarter's capex times this (1 = the scenario's)")
    ai_share: float | None = Field(None, gt=0, le=1, description="what-if: every company's AI share of capex")
    power_envelope_w: float | None = Field(None, gt=0, allow_inf_nan=False,
                                           description="what-if: every quarter's facility power cap (2.2GW)")
    capex_to_online_quarters: int | None = Field(None, ge=0, le=16,
                                                 description="what-if: quarters from capex to chips online")

    @field_validator("power_envelope_w", mode="before")
    @classmethod
    def _power(cls, value: Any) -> Any:
        return units.parse_power(value, "--power-envelope-w") if isinstance(value, str) else value

    def overrides(self) -> dict[str, Any]:
        """The what-if fields given (those left None keep the scenario's values)."""
        given = {name: getattr(self, name) for name in ("capex_scale", "ai_share", "power_envelope_w",
                                                       "capex_to_online_quarters") if getattr(self, name) is not None}
        if given.get("capex_scale") == 1.0:
            del given["capex_scale"]  # the scenario's capex
        return given


class FleetAnswer(Answer):
    """The quarters (``record``: the ``fleet --json`` object, without ``report``)."""

    scenario: str
    quarters: int
    last_quarter_chips: float | None = None


def answer(request: FleetRequest, progress: Callable[[str], None] | None = None) -> FleetAnswer:
    """The timeline of the scenario; ``progress(text)`` is told each plan search."""
    overrides = request.overrides()
    name, records = fleet_records(request.scenario, runs=request.runs, progress=progress, overrides=overrides)
    record: dict[str, Any] = {"scenario": name, "quarters": records}
    if overrides:
        record["overrides"] = overrides
    scenario = fleet_scenario(request.scenario, overrides)
    if scenario.backtest:
        record["backtest"] = backtest(scenario, records)
    return FleetAnswer(record=record, scenario=name, quarters=len(records),
                       last_quarter_chips=records[-1]["chips"] if records else None)
