"""The campus simulation's inputs: a scenario's ``campus_simulation:`` section, validated whole.

A Rainier-style scenario (``catalog/scenarios/rainier.yaml``) may carry a ``campus_simulation:``
section: the serving models with their demand profiles, the training jobs, the shared policy's
night window, the serving headroom and the hourly energy price and carbon intensity. A scenario
without one gets a section built from its ``serving:`` and ``training:`` blocks. The schema
(:class:`CampusSimulation`, its defaults) is in ``specs/scenario.py``; here the section is built,
parsed with its cross-field rules and checked against the catalog. Every default that is not a
published figure is marked ASSUMED (in ``specs/scenario.py``, the scenario file and
``docs/campus.md``).

Sources of the practice modelled: Semafor (2025-10-29, one source) reports that most of Project
Rainier's chips serve inference and that training runs at night and pauses during the day.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from clusterplan.catalog import load_model
from clusterplan.catalog.loader import spec_error
from clusterplan.errors import SpecError
from clusterplan.specs import Chip
from clusterplan.specs.scenario import CampusSimulation  # the section's schema

POLICIES = ("shared", "dedicated", "slo-aware")
MAX_DAYS = 3660
#: Hours in an average month (365.25 days / 12), for the demand growth per month.
HOURS_PER_MONTH = 365.25 * 24.0 / 12.0
WHERE = "scenario.campus_simulation"

#: ASSUMED time-of-use multipliers of the electricity price, local time: off-peak 22:00-06:00
#: at 0.75x, on-peak 14:00-19:00 at 1.35x, else 1x (the shape of US industrial time-of-use
#: tariffs; the level is the economics catalog's average price).
DEFAULT_PRICE_SHAPE = tuple(0.75 if (h >= 22 or h < 6) else 1.35 if 14 <= h < 19 else 1.0 for h in range(24))


def default_section(scenario: dict[str, Any]) -> dict[str, Any]:
    """A section built from a scenario's ``serving:`` and ``training:`` blocks (the demand taken
    as the peak of the first week), with the default shapes."""
    serving = scenario.get("serving")
    if not isinstance(serving, dict):
        raise SpecError("scenario.campus_simulation", None,
                        "the scenario needs a campus_simulation: section or a serving: block to simulate")
    keep = ("model", "input_tokens", "output_tokens", "slo_ttft", "slo_tpot", "objective", "weights", "kv_cache")
    section: dict[str, Any] = {"serving": [{**{k: serving[k] for k in keep if k in serving},
                                            "peak_demand": serving.get("demand", "10M")}]}
    training = scenario.get("training")
    if isinstance(training, dict):
        keep_job = ("model", "tokens", "seq_len", "global_batch", "precisions", "max_memory_fraction")
        section["training"] = [{k: training[k] for k in keep_job if k in training}]
    return section


def parse_section(data: Any, where: str = "scenario.campus_simulation") -> CampusSimulation:
    """The section as a :class:`CampusSimulation`; any problem is one SpecError on ``where.<key>``."""
    if not isinstance(data, dict):
        raise SpecError(where, data, "must be a mapping (serving, training, night_start, ...)")
    try:
        section = CampusSimulation.model_validate(data)
    except ValidationError as error:
        raise spec_error(error, where, CampusSimulation) from None
    for index, job in enumerate(section.training):
        if job.max_chips is not None and job.max_chips < job.min_chips:
            raise SpecError(f"{where}.training[{index}].max_chips", job.max_chips,
                            f"must be >= min_chips ({job.min_chips})")
    if section.night_start == section.night_end:
        raise SpecError(f"{where}.night_end", section.night_end, "must differ from night_start (a night of 0 h)")
    return section


def check_section(data: Any, scenario: dict[str, Any], chip: Chip) -> CampusSimulation:
    """The campus section (or the default one built from ``serving:``/``training:``), its model
    names and precisions checked against the chip, with nothing computed."""
    section = parse_section(data if data is not None else default_section(scenario), WHERE)
    for index, spec in enumerate(section.serving):
        load_model(spec.model, f"{WHERE}.serving[{index}].model")
        for precision in spec.weights:
            chip.require(precision, f"{WHERE}.serving[{index}].weights")
    for index, job in enumerate(section.training):
        load_model(job.model, f"{WHERE}.training[{index}].model")
        for precision in job.precisions:
            chip.require(precision, f"{WHERE}.training[{index}].precisions")
    return section

def check_policy(policy: str) -> tuple[str, ...]:
    """The policies ``--policy`` names: one of POLICIES, or ``all``."""
    if policy == "all":
        return POLICIES
    if policy not in POLICIES:
        raise SpecError("--policy", policy, f"must be one of {', '.join(POLICIES)} or all")
    return (policy,)


def check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise SpecError("--days", days, f"must be a whole number of days from 1 to {MAX_DAYS}")
    return days
