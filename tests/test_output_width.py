"""Every command's typical output read through a pipe at 80 columns (a CI log, ``| less``):
no line wider than 80, no number cut (``1,000,0…``) or split across lines (``16,3`` / ``84``),
the headline numbers of the JSON intact in the text; ``--help`` keeps every option whole."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from typer.testing import CliRunner

from clusterplan.cli import app

TRAIN = ["train", "--model", "llama3-70b", "--system", "dgx-h100", "--chips", "1024", "--tp", "8", "--pp", "4",
         "--vp", "5", "--seq", "8192", "--global-batch", "512", "--precision", "fp8", "--overlap-tp", "--tokens", "15T"]
SEARCH = ["search", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", "16384", "--seq", "8192",
          "--global-batch", "2048", "--top", "5"]
SERVE = ["serve", "--model", "llama3-70b", "--system", "dgx-h100", "--tp", "8", "--weights", "fp8", "--kv-cache",
         "fp8", "--slo-ttft", "2000", "--slo-tpot", "50", "--demand", "1M", "--requests", "500"]
CAPACITY = ["capacity", "--model", "llama3-70b", "--system", "dgx-h100", "--demand", "1M", "--slo-ttft", "2s",
            "--slo-tpot", "50ms", "--requests", "300", "--top", "3"]
RELIABILITY = ["reliability", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", "16384", "--tp", "8",
               "--pp", "16", "--tokens", "15T", "--trials", "200"]
FLEET = ["fleet", "hyperscalers-2025", "--no-runs"]
VALIDATE = ["validate", "--table", "megatron_sc21", "--table", "nemo_perf"]
#: A cell that is one whole number (with separators): if the next line's same cell starts with a
#: digit, the number was folded across the two lines.
WHOLE_NUMBER = re.compile(r"[$~+\-]?[\d,.]+")


def invoke(argv: list[str]) -> str:
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "80"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def cells(line: str) -> list[str] | None:
    return re.split(r"[│┃]", line) if ("│" in line or "┃" in line) else None


def assert_readable(text: str) -> None:
    lines = text.splitlines()
    assert lines
    wide = [line for line in lines if len(line) > 80 and " " in line.strip()]  # a long path cannot break
    assert not wide, "\n".join(wide)
    cut = [line for line in lines if "…" in line]
    assert not cut, "\n".join(cut)
    for above, below in itertools.pairwise(lines):
        top, bottom = cells(above), cells(below)
        if not top or not bottom or len(top) != len(bottom):
            continue
        if not any(upper.strip() and not lower.strip() for upper, lower in zip(top, bottom, strict=True)):
            continue  # a new row, not the continuation of a wrapped one
        for upper, lower in zip(top, bottom, strict=True):
            folded = WHOLE_NUMBER.fullmatch(upper.strip()) and re.match(r"\d", lower.strip())
            assert not folded, f"number split across lines:\n{above}\n{below}"


def assert_numbers_intact(text: str, numbers: list[str]) -> None:
    for number in numbers:
        assert re.search(rf"(?<![\d,.]){re.escape(number)}(?![\d,])", text), f"{number} not whole in:\n{text}"


def json_of(argv: list[str]) -> Any:
    return json.loads(invoke([*argv, "--json"]))


def test_train_at_80_columns() -> None:
    record = json_of(TRAIN)
    text = invoke(TRAIN)
    assert_readable(text)
    assert_numbers_intact(text, [f"{record['tokens_per_s_per_chip']:,.0f}", f"{100 * record['mfu']:.1f}",
                                 f"{record['chips']:,}", f"{record['energy_mwh']:,.0f}"])
    assert "MFU / HFU (of fp8 dense peak)" in text  # the basis of an fp8 plan's MFU


def test_search_at_80_columns() -> None:
    best = json_of(SEARCH)["best"]
    text = invoke(SEARCH)
    assert_readable(text)
    assert_numbers_intact(text, [f"{100 * r['mfu']:.1f}" for r in best])
    assert "GiB" in text and "dense peak" in text


def test_serve_and_capacity_at_80_columns() -> None:
    for argv in (SERVE, CAPACITY):
        assert_readable(invoke(argv))
    ranked = json_of(CAPACITY)["ranked"]
    assert_numbers_intact(invoke(CAPACITY), [f"{r['chips']:,}" for r in ranked])


def test_reliability_at_80_columns() -> None:
    record = json_of(RELIABILITY)
    text = invoke(RELIABILITY)
    assert_readable(text)
    assert_numbers_intact(text, [f"{record['interruptions_expected']:,.0f}"])


@pytest.mark.parametrize("kind", ["chips", "systems", "models"])
def test_catalog_at_80_columns(kind: str) -> None:
    text = invoke(["catalog", kind])
    assert_readable(text)
    for record in json_of(["catalog", kind])[kind]:
        assert record["name"] in text  # names whole, greppable
    if kind == "chips":
        assert "GiB" in text and "GB " not in text  # memory in GiB everywhere


def test_fleet_and_validate_at_80_columns() -> None:
    quarters = json_of(FLEET)["quarters"]
    text = invoke(FLEET)
    assert_readable(text)
    assert_numbers_intact(text, [f"{r['chips']:,}" for r in quarters])
    assert_readable(invoke(VALIDATE))


def test_fleet_what_ifs_at_80_columns() -> None:
    argv = [*FLEET, "--capex-scale", "1.5", "--ai-share", "0.4", "--power-envelope-w", "2.2GW",
            "--capex-to-online-quarters", "3"]
    text = invoke(argv)
    assert_readable(text)
    assert text.startswith("what-if: --capex-scale 1.5, --ai-share 0.4, --power-envelope-w 2.20GW,")
    assert_numbers_intact(text, [f"{r['chips']:,}" for r in json_of(argv)["quarters"]])


def test_sweep_at_80_columns(tmp_path: Any) -> None:
    argv = ["sweep", "examples/sweep-small.yaml", "--workers", "1", "--output", str(tmp_path / "s.parquet")]
    text = invoke(argv)
    assert_readable(text)
    assert_numbers_intact(text, [f"{100 * row['mfu']:.1f}" for row in json_of(argv)["plans"]])


@pytest.mark.slow
def test_rainier_at_80_columns(tmp_path: Any) -> None:
    argv = ["rainier", "--report-dir", str(tmp_path)]
    text = invoke(argv)
    assert_readable(text)
    record = json.loads(invoke([*argv, "--json"]))
    assert_numbers_intact(text, [f"{s['chips']:,}" for s in record["growth"]]
                          + [f"{s['peak_fp8_eflops']:,.0f}" for s in record["growth"]]
                          + [f"{r['chips']:,}" for r in record["frontier_runs"]])


@pytest.mark.parametrize("command", ["train", "search", "sweep", "fleet", "reliability", "catalog", "validate",
                                     "calibrate", "serve", "capacity", "rainier"])
def test_help_at_80_columns_keeps_option_names_whole(command: str) -> None:
    text = invoke([command, "--help"])
    assert max(len(line) for line in text.splitlines()) <= 80
    import typer.main

    group: Any = typer.main.get_command(app)
    for param in group.commands[command].params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("--"):
                assert name in text, name
