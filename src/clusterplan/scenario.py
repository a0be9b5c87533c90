"""A Rainier-style scenario file checked whole, before anything is computed: the schema
(``specs/scenario.py``), the catalog names it uses, the precisions its chip has, and the sections
its planners parse (``reliability:``, ``fleet:``, ``campus_simulation:``).

What the Rainier report (``api/rainier.py``) and the campus simulation (``campus/run.py``) both
call first; it sits beside the planners (it uses their section parsers), below the API.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from clusterplan.catalog import hardware_for, load_model, load_system
from clusterplan.catalog.loader import spec_error
from clusterplan.reliability.failures import recovery_settings
from clusterplan.specs.scenario import RainierScenario


def check_recovery(data: dict[str, Any] | None) -> None:
    """The scenario's ``reliability:`` section, checked with nothing computed, by the same parser
    the report uses (:func:`recovery_settings`)."""
    if data is not None:
        recovery_settings(data, "scenario.reliability")


def check_scenario(data: dict[str, Any], reference: str) -> RainierScenario:
    """Validate a whole Rainier-style scenario first: its schema (unknown keys refused), its
    units, the catalog names it uses, the precisions its chip has, and its ``fleet:`` section;
    any problem is a one-line SpecError on ``scenario.<key>`` with nothing computed yet."""
    from clusterplan.fleet.timeline import check_envelopes, parse_scenario

    try:
        scenario = RainierScenario.model_validate(data)
    except ValidationError as error:
        raise spec_error(error, "scenario", RainierScenario) from None
    check_recovery(scenario.reliability)
    system = load_system(scenario.system, "scenario.system")
    chip = hardware_for(system).chip
    jobs = [("scenario.training", scenario.training)] if scenario.training is not None else []
    jobs += [(f"scenario.frontier_runs[{i}]", job) for i, job in enumerate(scenario.frontier_runs)]
    for where, job in jobs:
        assert job is not None
        load_model(job.model, f"{where}.model")
        for precision in job.precisions:
            chip.require(precision, f"{where}.precisions")
    if scenario.serving is not None:
        load_model(scenario.serving.model, "scenario.serving.model")
        for precision in scenario.serving.weights:
            chip.require(precision, "scenario.serving.weights")
    if scenario.fleet is not None:
        check_envelopes(parse_scenario(scenario.fleet, f"{reference} (fleet:)"))
    if scenario.campus_simulation is not None:
        from clusterplan.campus.scenario import check_section

        check_section(scenario.campus_simulation, data, chip)
    return scenario
