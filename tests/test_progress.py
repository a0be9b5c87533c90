"""Progress of slow commands: on stderr only, one short line per step off a terminal once the
command has run for $CLUSTERPLAN_PROGRESS_AFTER seconds (2 by default), never on stdout."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from rich.console import Console

from clusterplan.report.console import StepProgress


def run(*argv: str, after: str | None = "0") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("CLUSTERPLAN_PROGRESS_AFTER", None)
    if after is not None:
        env["CLUSTERPLAN_PROGRESS_AFTER"] = after
    return subprocess.run([sys.executable, "-c", "from clusterplan.cli import main; main()", *argv],
                          capture_output=True, text=True, env=env, check=False, timeout=600)


def test_validate_reports_each_table_on_stderr_and_keeps_stdout_json() -> None:
    done = run("validate", "--table", "megatron_sc21", "--table", "korthikanti2022", "--json")
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), dict)  # stdout: the JSON object and nothing else
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("validate: ") for line in lines), done.stderr
    assert any("megatron_sc21" in line for line in lines) and any("korthikanti2022" in line for line in lines)
    assert lines[-1].startswith("validate: done in")


def test_fleet_reports_its_plan_searches() -> None:
    done = run("fleet", "rainier", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["scenario"] == "rainier"
    assert "fleet: searching the reference run on" in done.stderr


def test_quick_commands_print_no_progress() -> None:
    done = run("validate", "--table", "megatron_sc21", "--json", after=None)  # well under 2 s
    assert done.returncode == 0 and done.stderr == ""


def test_step_progress_off_a_terminal_is_one_line_per_step_after_the_quiet_period() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False, width=80)
    with StepProgress("demo", console=console, quiet_s=0.0) as bar:
        bar.step("first")
        bar.step("second")
    lines = stream.getvalue().splitlines()
    assert [line.split(" [")[0] for line in lines[:2]] == ["demo: first", "demo: second"]
    assert lines[2].startswith("demo: done in")
    quiet = io.StringIO()
    with StepProgress("demo", console=Console(file=quiet, force_terminal=False), quiet_s=60.0) as bar:
        bar.step("fast")
    assert quiet.getvalue() == ""
