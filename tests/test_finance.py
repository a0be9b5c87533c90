"""Finance-grade cost (issue #14 part 5): kinds and sources of every economics number, the
Rainier campus capex reconciliation, and the catalog's economics listing."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
import yaml

from cliutil import run_cli as run
from clusterplan import units
from clusterplan.catalog import hardware_for, load_economics, load_scenario, load_system
from clusterplan.costs.money import price_flags
from clusterplan.report.rainier import capex_reconciliation, cluster_totals, reconciliation_lines

KINDS = {"published", "estimate", "assumption"}


def _raw_economics() -> dict[str, Any]:
    text = resources.files("clusterplan.catalog").joinpath("economics.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _entries(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every number of economics.yaml as written: shared values, system prices, rented prices."""
    entries = {name: entry for name, entry in data.items() if name != "systems"}
    for name, system in data["systems"].items():
        entries[f"systems.{name}"] = system
        for index, price in enumerate(system.get("rented", [])):
            entries[f"systems.{name}.rented[{index}]"] = price
    return entries


def test_every_economics_entry_has_a_kind_and_a_source() -> None:
    entries = _entries(_raw_economics())
    assert "wacc" in entries and "capex_to_online_quarters" in entries and "depreciation_method" in entries
    missing = {name: entry for name, entry in entries.items()
               if entry.get("kind") not in KINDS or len(str(entry.get("source", "")).strip()) < 15}
    assert not missing, f"entries without a kind (published/estimate/assumption) or a source: {sorted(missing)}"


def test_estimates_say_so_in_their_source() -> None:
    for name, entry in _entries(_raw_economics()).items():
        if entry["kind"] == "estimate":
            assert "estimate" in entry["source"].lower(), name


def test_rented_prices_carry_a_date_and_basis() -> None:
    economics = load_economics()
    rented = {name: system.rented for name, system in economics.systems.items() if system.rented}
    assert {"dgx-h100", "trn1", "tpu-v5e", "tpu-v5p"} <= set(rented)
    for prices in rented.values():
        for price in prices:
            assert price.date and price.instance and price.basis
            assert 0.1 < price.usd_per_chip_hour < 50


def test_wacc_is_a_sourced_estimate_in_a_plausible_range() -> None:
    wacc = load_economics().wacc
    assert wacc.kind == "estimate" and "damodaran" in wacc.source.lower()
    assert 0.05 <= wacc.value <= 0.12


def test_estimated_prices_stay_flagged() -> None:
    economics = load_economics()
    assert price_flags(load_system("trn2-ultraserver"), economics)  # usd_per_chip 9000 is an estimate
    assert not price_flags(load_system("dgx-h100"), economics)


def _rainier_like_record() -> dict[str, Any]:
    scenario = load_scenario("rainier")
    system = load_system(scenario["system"])
    chip = hardware_for(system).chip
    campus = scenario["campus"]
    return {
        "growth": [{"label": stage["label"], **cluster_totals(system, chip, stage["chips"])}
                   for stage in scenario["growth"]],
        "campus": {**campus, "capex_usd": units.parse_count(campus["capex_usd"], "capex"),
                   "power_w": units.parse_power(campus["power_w"], "power")},
    }


def test_rainier_reconciliation_sums_match_their_parts() -> None:
    record = _rainier_like_record()
    reconciliation = capex_reconciliation(record)
    assert reconciliation["reported_usd"] == pytest.approx(11e9)
    assert [row["stage"] for row in reconciliation["stages"]] == [s["label"] for s in record["growth"]]
    for row, stage in zip(reconciliation["stages"], record["growth"], strict=True):
        assert row["servers_usd"] + row["network_usd"] + row["facility_usd"] == pytest.approx(row["total_usd"])
        assert row["total_usd"] == pytest.approx(stage["capex_usd"])  # the figure the cluster table shows
        assert row["share_of_campus_power"] == pytest.approx(stage["facility_mw"] * 1e6 / 2.2e9)
        assert row["reported_pro_rata_usd"] == pytest.approx(11e9 * row["share_of_campus_power"])
        assert row["facility_minus_reported_pro_rata_usd"] == pytest.approx(
            row["facility_usd"] - row["reported_pro_rata_usd"])
    assert reconciliation["model_facility_usd_full_campus"] == pytest.approx(
        2.2e9 * reconciliation["model_facility_usd_per_facility_w"])
    # No unexplained number: the explanation states the last stage's parts and the total they add to.
    last = reconciliation["stages"][-1]
    text = reconciliation["explanation"]
    for value in ("servers_usd", "network_usd", "facility_usd", "total_usd"):
        assert f"${last[value] / 1e9:.1f}B" in text
    assert "$11B reported" in text
    markdown = "\n".join(reconciliation_lines(reconciliation))
    assert markdown.count("\n|") >= len(record["growth"]) + 2


def test_catalog_economics_lists_kinds_and_sources(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, ["catalog", "economics", "--json"])
    assert code == 0, err
    records = json.loads(out)
    names = {record["name"] for record in records}
    assert {"wacc", "capex_to_online_quarters", "systems.trn2-ultraserver.usd_per_chip"} <= names
    assert all(record["kind"] in KINDS and record["source"] for record in records)
