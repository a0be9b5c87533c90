"""How does a fleet grow, quarter by quarter? (``clusterplan fleet``)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

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


def fleet_scenario(reference: str) -> FleetScenario:
    """A fleet scenario by built-in name or YAML path, checked (a Rainier-style scenario's
    ``fleet:`` section when present)."""
    data = load_scenario(reference, "fleet")
    if isinstance(data.get("fleet"), dict):
        data = data["fleet"]
    scenario = parse_scenario(data, reference)
    check_envelopes(scenario)
    return scenario


def fleet_records(reference: str, runs: bool = True,
                  progress: Callable[[str], None] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The timeline of a built-in scenario name or a YAML path (a Rainier-style scenario's
    ``fleet:`` section is used when present). ``progress(text)`` is told each plan search."""
    scenario = fleet_scenario(reference)
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


class FleetAnswer(Answer):
    """The quarters (``record``: the ``fleet --json`` object, without ``report``)."""

    scenario: str
    quarters: int
    last_quarter_chips: float | None = None


def answer(request: FleetRequest, progress: Callable[[str], None] | None = None) -> FleetAnswer:
    """The timeline of the scenario; ``progress(text)`` is told each plan search."""
    name, records = fleet_records(request.scenario, runs=request.runs, progress=progress)
    record: dict[str, Any] = {"scenario": name, "quarters": records}
    scenario = fleet_scenario(request.scenario)
    if scenario.backtest:
        record["backtest"] = backtest(scenario, records)
    return FleetAnswer(record=record, scenario=name, quarters=len(records),
                       last_quarter_chips=records[-1]["chips"] if records else None)
