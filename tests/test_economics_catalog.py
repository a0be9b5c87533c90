"""catalog/economics.yaml: validates, covers every system, and every number carries a real source."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest
import yaml

from clusterplan.specs.economics import Economics, Sourced

MIN_SOURCE_CHARS = 15
USD_PER_CHIP_RANGE = (1_000.0, 200_000.0)
PUE_RANGE = (1.0, 2.0)


def _catalog_yaml(filename: str) -> Any:
    return yaml.safe_load(resources.files("clusterplan.catalog").joinpath(filename).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = _catalog_yaml("economics.yaml")
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def economics(raw: dict[str, Any]) -> Economics:
    return Economics.model_validate(raw)


def _system_names() -> list[str]:
    return [entry["name"] for entry in _catalog_yaml("systems.yaml")]


def _shared(economics: Economics) -> dict[str, Sourced]:
    return {name: value for name, value in economics if isinstance(value, Sourced)}


def test_validates_as_economics(economics: Economics) -> None:
    assert isinstance(economics, Economics)
    assert economics.systems


@pytest.mark.parametrize("system", _system_names())
def test_every_system_has_capex(economics: Economics, system: str) -> None:
    assert system in economics.systems, f"{system} (systems.yaml) has no entry in economics.yaml"


def test_no_capex_for_unknown_systems(economics: Economics) -> None:
    assert set(economics.systems) <= set(_system_names())


def test_every_source_is_substantive(economics: Economics) -> None:
    sources = {f"{name}.source": entry.source for name, entry in _shared(economics).items()}
    sources |= {f"systems.{name}.source": entry.source for name, entry in economics.systems.items()}
    assert len(sources) == len(_shared(economics)) + len(economics.systems)
    short = {key: text for key, text in sources.items() if len(text.strip()) < MIN_SOURCE_CHARS}
    assert not short, f"sources shorter than {MIN_SOURCE_CHARS} characters: {short}"


@pytest.mark.parametrize("system", _system_names())
def test_usd_per_chip_in_sane_range(economics: Economics, system: str) -> None:
    low, high = USD_PER_CHIP_RANGE
    assert low <= economics.systems[system].usd_per_chip <= high


def test_pue_in_range(economics: Economics) -> None:
    low, high = PUE_RANGE
    assert low <= economics.pue.value <= high


def test_shares_are_fractions(economics: Economics) -> None:
    for value in (economics.network_capex_share, economics.maintenance_share_per_year, economics.chip_idle_fraction):
        assert 0.0 <= value.value < 1.0
