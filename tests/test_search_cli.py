"""`clusterplan search` on the command line: JSON contract and refusals."""

from __future__ import annotations

import json

import pytest

from cliutil import run_cli as run

BASE = ["search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64", "--seq", "8192",
        "--global-batch", "256"]




def test_search_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, [*BASE, "--precision", "bf16,fp8", "--top", "3", "--tokens", "1T", "--json"])
    assert code == 0, err
    record = json.loads(out)
    for key in ("plans_enumerated", "plans_fitting", "search_time_s", "best"):
        assert key in record
    assert 1 <= len(record["best"]) <= 3
    for plan_record in record["best"]:
        for key in ("tp", "pp", "vp", "cp", "ep", "dp", "micro_batch", "recompute", "zero", "precision"):
            assert key in plan_record["plan"]
        for key in ("step_time_s", "mfu", "memory_bytes_per_chip", "time_to_train_s", "why_not_best"):
            assert key in plan_record
        plan = plan_record["plan"]
        assert plan["tp"] * plan["pp"] * plan["cp"] * plan["dp"] == 64
    steps = [r["step_time_s"] for r in record["best"]]
    assert steps == sorted(steps)


def test_search_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, [*BASE, "--top", "3"])
    assert code == 0
    assert "plans enumerated" in out and "best plans" in out


@pytest.mark.parametrize(("extra", "needle"), [
    (["--precision", "fp16"], "--precision"),
    (["--recompute", "most"], "--recompute"),
    (["--zero", "5"], "--zero"),
    (["--zero", "x"], "--zero"),
    (["--objective", "speed"], "--objective"),
    (["--max-memory-fraction", "0"], "--max-memory-fraction"),
    (["--top", "0"], "--top"),
    (["--max-tp", "0"], "--max-tp"),
])
def test_search_refuses_bad_options(capsys: pytest.CaptureFixture[str], extra: list[str], needle: str) -> None:
    code, out, err = run(capsys, [*BASE, *extra])
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


def test_search_with_no_fitting_plan_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, ["search", "--model", "llama3-405b", "--system", "dgx-h100", "--chips", "8",
                                  "--seq", "8192", "--global-batch", "8", "--json"])
    assert code == 1 and out == ""  # a valid question answered no (README, "Exit codes")
    assert err.startswith("error: --chips=8: no plan fits")
    assert len(err.splitlines()) == 1
