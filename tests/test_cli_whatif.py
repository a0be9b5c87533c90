"""The what-if options of ``rainier`` and ``fleet`` (the web planner's, issue #15): the CLI's
``--json`` is the API's answer to a request with the same fields; bad values are one line
naming the option, exit code 2; no what-if leaves the output as it was."""

from __future__ import annotations

import json

import pytest

from cliutil import run_cli
from clusterplan.api.fleet import FleetRequest
from clusterplan.api.fleet import answer as fleet_answer
from clusterplan.api.rainier import RainierRequest
from clusterplan.api.rainier import answer as rainier_answer

FLEET = ["fleet", "amazon-2025", "--no-runs"]


def untimed(value: object) -> object:
    """A record without its wall-clock figures (``search_time_s``), which differ run to run."""
    if isinstance(value, dict):
        return {key: untimed(item) for key, item in value.items() if key != "search_time_s"}
    if isinstance(value, list):
        return [untimed(item) for item in value]
    return value


def ok_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    return json.loads(out)


def test_fleet_what_ifs_answer_as_the_api(capsys: pytest.CaptureFixture[str]) -> None:
    plain = ok_json(capsys, [*FLEET, "--json"])
    assert "overrides" not in plain
    assert plain == json.loads(fleet_answer(FleetRequest(scenario="amazon-2025", runs=False)).to_json())
    argv = [*FLEET, "--capex-scale", "2", "--ai-share", "0.5", "--power-envelope", "2.2GW",
            "--capex-to-online-quarters", "2", "--json"]
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    request = FleetRequest(scenario="amazon-2025", runs=False, capex_scale=2, ai_share=0.5,
                           power_envelope_w="2.2GW", capex_to_online_quarters=2)
    assert out == fleet_answer(request).to_json()
    record = json.loads(out)
    assert record["overrides"] == {"capex_scale": 2.0, "ai_share": 0.5, "power_envelope_w": 2.2e9,
                                   "capex_to_online_quarters": 2}
    assert record["quarters"] != plain["quarters"]


def test_fleet_capex_scale_of_one_is_the_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code, plain, _ = run_cli(capsys, FLEET)
    assert code == 0
    code, scaled, _ = run_cli(capsys, [*FLEET, "--capex-scale", "1"])
    assert code == 0
    assert scaled == plain and "what-if" not in plain
    code, changed, _ = run_cli(capsys, [*FLEET, "--capex-scale", "0.5"])
    assert code == 0
    assert changed.startswith("what-if: --capex-scale 0.5\n") and changed != plain


def test_rainier_what_ifs_answer_as_the_api(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    whatifs = ["--chips", "100000", "--tokens", "5T", "--recovery", "wait", "--checkpoint", "sync",
               "--failure-scale", "2", "--no-frontier-runs", "--no-serving"]
    record = ok_json(capsys, ["rainier", "--json", "--report-dir", str(tmp_path), *whatifs])
    assert record.pop("report")["html"].endswith("rainier.html")
    request = RainierRequest(scenario="rainier", chips=100000, tokens="5T", recovery="wait", checkpoint="sync",
                             failure_scale=2, frontier_runs=False, serving=False)
    assert untimed(record) == untimed(json.loads(rainier_answer(request).to_json()))
    assert record["overrides"] == {"chips": 100000, "tokens": 5e12, "recovery": "wait", "checkpoint": "sync",
                                   "failure_scale": 2.0, "frontier_runs": False, "serving": False}
    assert record["chips"] == 100000 and record["frontier_runs"] == [] and "serving" not in record
    assert record["training"]["tokens"] == 5e12


@pytest.mark.parametrize(("argv", "needles"), [
    (["rainier", "--chips", "0"], ("--chips", "0")),
    (["rainier", "--chips", "many"], ("--chips", "many")),
    (["rainier", "--growth", "500k,lots"], ("--growth", "500k,lots")),
    (["rainier", "--growth", "1,2,3,4,5,6,7,8,9"], ("--growth", "1,2,3,4,5,6,7,8,9", "at most 8")),
    (["rainier", "--growth", "0,1M"], ("--growth", "0")),
    (["rainier", "--tokens", "-1T"], ("--tokens", "-1T")),
    (["rainier", "--demand", "0"], ("--demand", "0")),
    (["rainier", "--slo-ttft", "2h"], ("--slo-ttft", "2h")),
    (["rainier", "--slo-tpot", "fast"], ("--slo-tpot", "fast")),
    (["rainier", "--recovery", "pray"], ("--recovery", "pray", "spares")),
    (["rainier", "--checkpoint", "never"], ("--checkpoint", "never", "async")),
    (["rainier", "--failure-scale", "0"], ("--failure-scale", "0")),
    (["rainier", "--failure-scale", "1000"], ("--failure-scale", "1000")),
    (["fleet", "amazon-2025", "--capex-scale", "0"], ("--capex-scale", "0")),
    (["fleet", "amazon-2025", "--capex-scale", "inf"], ("--capex-scale", "inf", "finite")),
    (["fleet", "amazon-2025", "--ai-share", "1.5"], ("--ai-share", "1.5")),
    (["fleet", "amazon-2025", "--power-envelope-w", "2GB"], ("--power-envelope-w", "2GB")),
    (["fleet", "amazon-2025", "--power-envelope", "-1GW"], ("--power-envelope", "-1GW")),
    (["fleet", "amazon-2025", "--capex-to-online-quarters", "17"], ("--capex-to-online-quarters", "17")),
])
def test_bad_what_ifs_are_refused_naming_the_option(capsys: pytest.CaptureFixture[str], tmp_path,
                                                    argv: list[str], needles: tuple[str, ...]) -> None:
    code, out, err = run_cli(capsys, [*argv, "--report-dir", str(tmp_path)])
    assert code == 2, (code, err)
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not list(tmp_path.iterdir())  # refused before any work


def test_rainier_table_with_what_ifs_names_them_first(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    code, out, err = run_cli(capsys, ["rainier", "--report-dir", str(tmp_path), "--chips", "100000",
                                      "--slo-tpot", "50ms", "--failure-scale", "2", "--no-frontier-runs",
                                      "--no-serving"])
    assert code == 0, err
    first = out.split("\nrainier: ")[0]
    assert " ".join(first.split()) == ("what-if: --chips 100k, --slo-tpot 50.0ms, --failure-scale 2, "
                                       "--no-frontier-runs, --no-serving")
    assert "100,000" in out and "step time" in out
    assert (tmp_path / "rainier.html").is_file()
