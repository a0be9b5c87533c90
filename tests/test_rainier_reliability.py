"""Issue #14: one set of failure figures. `clusterplan rainier` computes every failure figure with
the function `clusterplan reliability` uses; the JSON, the Markdown, the HTML and docs/rainier.md
show the same numbers; the answers are finite at 262k-1M chips."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cliutil import run_cli
from clusterplan import cli
from clusterplan.report.rainier import campus_cells, failure_runs, run_cells

DOCS = Path(__file__).resolve().parent.parent / "docs" / "rainier.md"
RELIABILITY_DOCS = DOCS.with_name("reliability.md")


@pytest.fixture(scope="module")
def rainier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`clusterplan rainier --json`, once for the module, with its Markdown and HTML."""
    directory = tmp_path_factory.mktemp("rainier")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.main(["rainier", "--json", "--report-dir", str(directory)])
    record: dict[str, Any] = json.loads(out.getvalue())
    record["_markdown"] = (directory / "rainier.md").read_text(encoding="utf-8")
    record["_html"] = (directory / "rainier.html").read_text(encoding="utf-8")
    return record


def _failure_records(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from record["reliability"]
    for _, run in failure_runs(record):
        yield run["reliability"]
    if "training_fewest_chip_hours" in record:
        yield record["training_fewest_chip_hours"]["reliability"]


def test_every_failure_figure_is_finite(rainier: dict[str, Any]) -> None:
    records = list(_failure_records(rainier))
    assert len(records) >= 8
    for failures in records:
        for key in ("goodput", "time_to_train_s", "checkpoint_interval_s", "interruptions_expected", "mean_outage_s"):
            value = failures[key]
            assert isinstance(value, float) and math.isfinite(value), key
        assert 0.0 < failures["goodput"] <= 1.0
        assert failures["time_to_train_s"] >= failures["time_to_train_failure_free_s"]
        assert failures["checkpoint_interval_s"] >= failures["checkpoint_write_s"]
        assert failures["checkpoint_interval_s"] >= failures["checkpoint_interval_floor_s"]
        assert "largest_job_chips_goodput_90" in failures
    # nothing else in the record carries failure figures (the search's alternatives do not)
    for alternative in rainier["search"]["alternatives"]:
        assert "reliability" not in alternative


def test_scenario_recovery_keeps_half_a_million_chips_above_80_percent(rainier: dict[str, Any]) -> None:
    launch = [row for row in rainier["reliability"] if row["stage_chips"] == 500_000]
    scenario = next(row for row in launch if row["profile"] == "scenario")
    assert scenario["chips"] > 0.99 * 500_000
    assert scenario["goodput"] >= 0.8
    assert scenario["checkpoint"] == "memory" and scenario["elastic"] and scenario["recovery"] == "spares"
    legacy = next(row for row in launch if row["profile"] != "scenario")
    assert 0.0 < legacy["goodput"] < scenario["goodput"]
    assert scenario["largest_job_chips_goodput_90"] > legacy["largest_job_chips_goodput_90"] > 0
    assert rainier["training"]["reliability"]["goodput"] >= 0.8


def test_rainier_figures_are_what_reliability_gives(rainier: dict[str, Any],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    launch = [row for row in rainier["reliability"] if row["stage_chips"] == 500_000]
    for failures in [*launch, rainier["training"]["reliability"]]:
        argv = shlex.split(failures["reproduce"])
        assert argv[:2] == ["clusterplan", "reliability"]
        code, out, err = run_cli(capsys, [*argv[1:], "--json"])
        assert code == 0, err
        expected = {k: v for k, v in failures.items() if k not in ("stage", "stage_chips", "profile")}
        assert json.loads(out) == expected


def test_markdown_html_and_docs_show_the_same_numbers(rainier: dict[str, Any]) -> None:
    markdown, page, docs = rainier["_markdown"], rainier["_html"], DOCS.read_text(encoding="utf-8")
    campus = [campus_cells(row) for row in rainier["reliability"]]
    runs = [run_cells(label, run) for label, run in failure_runs(rainier)]
    for cells in campus + runs:
        line = "| " + " | ".join(cells.values()) + " |"
        assert line in markdown
        assert line in docs, f"docs/rainier.md is out of date: regenerate it from `clusterplan rainier` ({line})"
        for value in cells.values():
            assert value.replace("&", "&amp;") in page
    reliability_docs = RELIABILITY_DOCS.read_text(encoding="utf-8")
    for cells in campus:
        assert "| " + " | ".join(cells.values()) + " |" in reliability_docs, "docs/reliability.md is out of date"


def test_scenario_recovery_settings_are_read_with_their_sources() -> None:
    from clusterplan.errors import SpecError
    from clusterplan.report.rainier import recovery_settings

    where = "scenario.reliability"
    settings = recovery_settings({"checkpoint": "memory", "recovery": "elastic", "failure_scale": 0,
                                  "restart": {"value": "90s", "source": "AWS, 2025"}}, where)
    assert settings.replacement == "wait" and settings.elastic and settings.failure_scale == 0.0
    assert settings.restart_s == 90.0 and settings.checkpoint == "memory"
    for bad, field in (({"restart": {"value": "90s"}}, "restart"), ({"retsart": "90s"}, "retsart"),
                       ({"recovery": "pray"}, "recovery"), ({"detection": "-1s"}, "--detection"),
                       ({"checkpoint": "never"}, "--checkpoint")):
        with pytest.raises(SpecError, match=field):
            recovery_settings(bad, where)


def test_rainier_headline_bands_are_its_parts_bands(rainier: dict[str, Any]) -> None:
    training = rainier["training"]
    for key, value in training["bands"].items():
        assert rainier["bands"][f"training.{key}"] == value
    assert rainier["bands"]["serving.best.chips"] == rainier["serving"]["bands"]["best.chips"]
    assert set(training["extrapolation"]) <= set(rainier["extrapolation"])
    assert any("inherited from trainium1" in flag for flag in rainier["extrapolation"])
