"""Power, money and the fleet timeline against hand-computed values; fleet refusals; reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cliutil import run_cli as run
from clusterplan.catalog import hardware_for, load_chip, load_economics, load_system
from clusterplan.costs.money import HOURS_PER_YEAR, capex, capital_recovery_factor, cost_per_chip_hour, rented_record
from clusterplan.costs.power import chip_power_w, cluster_power, training_activity
from clusterplan.errors import SpecError
from clusterplan.fleet.timeline import parse_scenario, quarter_index, quarter_label, system_cost, timeline


def test_chip_power_runs_from_idle_to_tdp() -> None:
    chip, economics = load_chip("h100-sxm"), load_economics()
    idle = economics.chip_idle_fraction.value
    assert chip_power_w(chip, 0.0, economics) == pytest.approx(700 * idle)
    assert chip_power_w(chip, 1.0, economics) == pytest.approx(700)
    assert chip_power_w(chip, 0.5, economics) == pytest.approx(700 * (idle + (1 - idle) * 0.5))


def test_training_activity_weights_waiting_time() -> None:
    assert training_activity({"compute": 1.0}, 1.0) == pytest.approx(1.0)
    assert training_activity({"compute": 0.5, "pp_bubble": 0.5}, 1.0) == pytest.approx(0.5 + 0.3 * 0.5)


def test_one_dgx_h100_at_full_power_by_hand() -> None:
    system, chip, economics = load_system("dgx-h100"), load_chip("h100-sxm"), load_economics()
    power = cluster_power(system, chip, 8, 1.0, economics)
    network = 8 * 400 / 100 * economics.network_watts_per_chip_per_100gbps.value  # 400 Gb/s per GPU
    assert power.accelerators_w == pytest.approx(8 * 700)
    assert power.hosts_w == pytest.approx(4600)  # DGX H100 10.2 kW - 8 x 700 W
    assert power.network_w == pytest.approx(network)
    assert power.facility_w == pytest.approx((5600 + 4600 + network) * economics.pue.value)


def test_capex_and_cost_per_chip_hour_by_hand() -> None:
    system, chip, economics = load_system("dgx-h100"), load_chip("h100-sxm"), load_economics()
    cost = capex(system, chip, 8, economics)
    servers = 8 * economics.systems["dgx-h100"].usd_per_chip
    share = economics.network_capex_share.value
    it_w = cluster_power(system, chip, 8, 1.0, economics).it_w
    assert cost["servers_usd"] == pytest.approx(servers)
    assert cost["network_usd"] == pytest.approx(servers * share / (1 - share))
    assert cost["facility_usd"] == pytest.approx(it_w * economics.facility_usd_per_it_watt.value)
    hourly = cost_per_chip_hour(system, chip, economics, 1.0)
    it_capex = (cost["servers_usd"] + cost["network_usd"]) / 8
    assert hourly["depreciation_usd"] == pytest.approx(it_capex / (economics.depreciation_years.value * HOURS_PER_YEAR))
    electricity = it_w * economics.pue.value / 8 / 1000 * economics.electricity_usd_per_kwh.value
    assert hourly["electricity_usd"] == pytest.approx(electricity)
    parts = [hourly[k] for k in ("depreciation_usd", "facility_usd", "cost_of_capital_usd", "electricity_usd",
                                 "maintenance_usd")]
    assert hourly["total_usd"] == pytest.approx(sum(parts))
    # Capital charge = capex x CRF(WACC, life) / hours: depreciation + return on capital.
    r, n, m = economics.wacc.value, economics.depreciation_years.value, economics.facility_life_years.value
    charge = (it_capex * capital_recovery_factor(r, n) + cost["facility_usd"] / 8 * capital_recovery_factor(r, m))
    assert (hourly["depreciation_usd"] + hourly["facility_usd"] + hourly["cost_of_capital_usd"]
            == pytest.approx(charge / HOURS_PER_YEAR))
    assert hourly["cost_of_capital_usd"] > 0
    assert 0.5 < hourly["total_usd"] < 3.0  # an owned H100 costs about $1-2 per hour


def test_capital_recovery_factor_by_hand() -> None:
    # 8 %, 5 years: 0.08 x 1.08^5 / (1.08^5 - 1) = 0.08 x 1.469328 / 0.469328 = 0.25046 (annuity tables).
    assert capital_recovery_factor(0.08, 5) == pytest.approx(0.2505, abs=5e-5)
    assert capital_recovery_factor(0.0, 5) == pytest.approx(0.2)
    assert capital_recovery_factor(0.10, 20) == pytest.approx(0.117460, abs=1e-6)
    with pytest.raises(ValueError):
        capital_recovery_factor(0.08, 0)


@pytest.mark.parametrize("name", ["dgx-h100", "trn2-ultraserver"])
def test_wacc_zero_gives_the_straight_line_figure(name: str) -> None:
    system = load_system(name)
    chip, economics = hardware_for(system).chip, load_economics()
    with_capital = cost_per_chip_hour(system, chip, economics, 0.7)
    straight = cost_per_chip_hour(system, chip, economics, 0.7, wacc=0.0)
    assert straight["cost_of_capital_usd"] == 0.0
    assert straight["total_usd"] == pytest.approx(with_capital["total_without_cost_of_capital_usd"])
    parts = ("depreciation_usd", "facility_usd", "electricity_usd", "maintenance_usd")
    assert straight["total_usd"] == pytest.approx(sum(with_capital[k] for k in parts))
    assert with_capital["total_usd"] > straight["total_usd"]


def test_rented_price_is_per_chip_and_null_where_unknown() -> None:
    economics = load_economics()
    h100 = rented_record(load_system("dgx-h100"), economics)
    assert h100["rented_usd_per_chip_hour"] == pytest.approx(98.32 / 8, abs=0.01)  # p5.48xlarge on-demand / 8
    assert all(p["source"] and p["date"] and p["kind"] for p in h100["rented_prices"])
    assert rented_record(load_system("trn2-ultraserver"), economics)["rented_usd_per_chip_hour"] is None


def _scenario(**overrides: object) -> dict[str, object]:
    company: dict[str, object] = {
        "name": "Test", "ai_share": 0.5, "ai_share_source": "test fixture",
        "quarters": [{"quarter": "2025Q1", "capex_usd": "10G", "source": "test fixture"},
                     {"quarter": "2025Q2", "capex_usd": "20G", "source": "test fixture"}],
        "mix": [{"from": "2025Q1", "system": "dgx-h100", "share": 1.0, "source": "test fixture"}],
    }
    company.update(overrides)
    return {"name": "test", "source": "test fixture", "companies": [company]}


def test_timeline_by_hand() -> None:
    scenario = parse_scenario({**_scenario(), "capex_to_online_quarters": 0}, "test")
    records = timeline(scenario)
    cost = system_cost("dgx-h100")
    first = 10e9 * 0.5 / cost.usd_per_chip
    second = first + 20e9 * 0.5 / cost.usd_per_chip
    assert records[0]["chips"] == round(first) and records[1]["chips"] == round(second)
    assert records[1]["capex_usd_cumulative"] == pytest.approx(15e9)
    assert records[1]["facility_mw"] == pytest.approx(second * cost.facility_w_per_chip / 1e6)
    assert records[1]["peak_bf16_eflops"] == pytest.approx(second * 989.4e12 / 1e18)
    economics = load_economics()
    it_capex, facility = 15e9 * cost.it_capex_share, 15e9 * (1 - cost.it_capex_share)
    expected = (it_capex / (economics.depreciation_years.value * 4)
                + facility / (economics.facility_life_years.value * 4))
    assert records[1]["depreciation_usd_quarter"] == pytest.approx(expected)


@pytest.mark.parametrize("lag", [1, 2, 3])
def test_chips_online_lag_capex_by_the_lag(lag: int) -> None:
    at_once = timeline(parse_scenario({**_scenario(), "capex_to_online_quarters": 0}, "test"))
    lagged = timeline(parse_scenario({**_scenario(), "capex_to_online_quarters": lag}, "test"))
    assert [r["quarter"] for r in at_once] == ["2025Q1", "2025Q2"]
    assert len(lagged) == 2 + lag  # the spending quarters, then the lag after the last
    online = {r["quarter"]: r["chips"] for r in lagged}
    ordered = {r["quarter"]: r["chips_ordered"] for r in lagged}
    quarters = [r["quarter"] for r in lagged]
    for offset, reference in enumerate(at_once):
        later = quarters[quarters.index(reference["quarter"]) + lag]
        assert online[later] == reference["chips"]  # what capex bought in q is online in q + lag
        assert ordered[reference["quarter"]] == reference["chips"]
        assert online[reference["quarter"]] < reference["chips"] or offset >= lag
    assert lagged[0]["chips"] == 0 and lagged[0]["depreciation_usd_quarter"] == 0
    assert lagged[-1]["capex_usd_cumulative"] == pytest.approx(at_once[-1]["capex_usd_cumulative"])
    assert lagged[-1]["depreciation_usd_quarter"] == pytest.approx(at_once[-1]["depreciation_usd_quarter"])


def test_fleet_lag_defaults_to_the_catalog() -> None:
    records = timeline(parse_scenario(_scenario(), "test"))
    lag = round(load_economics().capex_to_online_quarters.value)
    assert records[0]["capex_to_online_quarters"] == lag
    assert records[-1]["quarter"] == quarter_label(quarter_index("2025Q2") + lag)


def test_power_envelope_caps_the_chips_and_leaves_money_unspent() -> None:
    quarters = [{"quarter": "2025Q1", "capex_usd": "10G", "power_envelope_w": "20MW", "source": "test fixture"}]
    record = timeline(parse_scenario({**_scenario(quarters=quarters), "capex_to_online_quarters": 0}, "test"))[0]
    assert record["facility_mw"] == pytest.approx(20.0, rel=1e-6)
    assert record["ai_capex_unspent_usd"] > 0


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"quarters": [{"quarter": "2025Q1", "capex_usd": -5, "source": "test fixture"}]}, "capex_usd"),
    ({"quarters": [{"quarter": "2025Q2", "capex_usd": 1, "source": "test fixture"},
                   {"quarter": "2025Q1", "capex_usd": 1, "source": "test fixture"}]}, "out of order"),
    ({"quarters": [{"quarter": "2025-Q1", "capex_usd": 1, "source": "test fixture"}]}, "2025Q3"),
    ({"mix": [{"from": "2025Q1", "system": "dgx-h900", "share": 1.0, "source": "test fixture"}]}, "dgx-h900"),
])
def test_bad_fleet_input_is_refused(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_scenario(_scenario(**overrides), "test")
    assert needle in str(error.value)


def test_power_envelope_smaller_than_one_system_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import yaml

    quarters = [{"quarter": "2025Q1", "capex_usd": "1G", "power_envelope_w": "5kW", "source": "test fixture"}]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_scenario(quarters=quarters)), encoding="utf-8")
    code, out, err = run(capsys, ["fleet", str(path), "--no-runs"])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "smaller than one dgx-h100 node" in err


@pytest.mark.parametrize("name", ["amazon-2025", "amazon-2026", "hyperscalers-2025", "rainier"])
def test_built_in_fleet_scenarios_run(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, err = run(capsys, ["fleet", name, "--no-runs", "--json"])
    assert code == 0, err
    document = json.loads(out)
    assert document["scenario"] == name
    records = document["quarters"]
    assert records
    for record in records:
        for key in ("chips", "it_mw", "facility_mw", "peak_bf16_eflops", "capex_usd_cumulative"):
            assert key in record
    if name == "rainier":
        assert records[-1]["chips"] == pytest.approx(1_000_000, rel=0.01)
        assert records[-1]["facility_mw"] < 2200  # inside the 2.2 GW build-out


def test_fleet_report_has_charts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, ["fleet", "hyperscalers-2025", "--no-runs", "--report-dir", str(tmp_path)])
    assert code == 0, err
    page = (tmp_path / "fleet-hyperscalers-2025.html").read_text(encoding="utf-8")
    assert page.count("Plotly.newPlot(") == 3  # interactive charts, plotly.js inlined (no CDN)
    assert "<script src" not in page
    assert "Microsoft" in page and (tmp_path / "fleet-hyperscalers-2025.md").exists()
    assert len(list(tmp_path.glob("fleet-hyperscalers-2025-*.png"))) == 3  # the Markdown's charts


def test_train_reports_energy_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ["train", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64",
                                "--seq", "8192", "--global-batch", "256", "--zero", "2", "--tokens", "1T", "--json"])
    assert code == 0
    record = json.loads(out)
    assert record["cost_usd"] == pytest.approx(record["cost_per_chip_hour_usd"] * record["chip_hours"])
    assert record["energy_mwh"] == pytest.approx(record["power_w"]["facility_w"] * record["time_to_train_s"] / 3.6e9)
    assert record["co2_tonnes"] > 0


def test_amazon_2025_is_backtested_against_what_amazon_reported(capsys) -> None:  # type: ignore[no-untyped-def]
    """The backtest compares the modelled 2025 with the reported figures, each sourced; capex is
    the scenario's input, so it must match to rounding; the error is (modelled - reported) / reported."""
    from clusterplan.api.fleet import FleetRequest, answer

    record = answer(FleetRequest(scenario="amazon-2025", runs=False)).record
    (test,) = record["backtest"]
    assert (test["company"], test["year"]) == ("Amazon", 2025)
    figures = {item["figure"]: item for item in test["figures"]}
    assert set(figures) == {"capex_usd", "gw_added_online", "gw_added_ordered", "chips_online_trn2-ultraserver",
                            "chips_ordered_trn2-ultraserver"}
    assert abs(figures["capex_usd"]["error"]) < 1e-3
    for item in figures.values():
        assert item["error"] == pytest.approx((item["modelled"] - item["reported"]) / item["reported"])
        assert len(item["source"]) > 20
    # Capex reaches the grid two quarters later: less is online at year end than was paid for.
    assert figures["gw_added_online"]["modelled"] < figures["gw_added_ordered"]["modelled"]
    assert figures["chips_online_trn2-ultraserver"]["modelled"] < figures["chips_ordered_trn2-ultraserver"]["modelled"]
    year_end = next(r for r in record["quarters"] if r["quarter"] == "2025Q4")
    assert figures["chips_online_trn2-ultraserver"]["modelled"] == year_end["chips_by_system"]["trn2-ultraserver"]
