"""Driving the CLI in-process from tests (imported by name: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import pytest

from clusterplan import cli


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``clusterplan argv``; a normal return is exit code 0."""
    capsys.readouterr()
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as done:
        code = 0 if done.code is None else int(done.code)
    out, err = capsys.readouterr()
    return code, out, err
