"""Regenerate the figures the documents quote from the code, after a refit or an estimator change.

    .venv/bin/python scripts/regen_docs.py            # README blocks and docs/validation.md tables
    .venv/bin/python scripts/regen_docs.py --check    # exit 1 if anything would change

* README.md: every fenced block whose first line is ``$ clusterplan <command> ...`` (with ``\\``
  continuations) for ``train``, ``search``, ``validate`` and ``rainier`` gets that command's output
  at 80 columns (``validate`` keeps only its last table, after a ``...`` line). Blocks showing an
  error, several commands, or other commands are left alone.
* docs/validation.md: its "Current results", from the summary table to the end of the page, is
  the output of ``clusterplan validate --markdown``.

Run it after ``clusterplan calibrate``; review the diff before committing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGENERATED = ("rainier", "train", "search", "validate")


def _clusterplan(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("clusterplan")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "80"})


def readme_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        if line == "```" and i + 1 < len(lines) and lines[i + 1].startswith("$ clusterplan "):
            j = i + 1
            command_lines = [lines[j]]
            while command_lines[-1].endswith("\\"):
                j += 1
                command_lines.append(lines[j])
            end = lines.index("```", j + 1)
            body = lines[j + 1:end]
            words = shlex.split(" ".join(part.rstrip("\\").strip() for part in command_lines)[2:])
            shown_elsewhere = any(b.startswith("$ ") for b in body) or "error:" in "\n".join(body)
            if words[1] not in REGENERATED or shown_elsewhere:
                out += lines[i + 1:end + 1]
            else:
                text = _clusterplan(*words[1:]).stdout.rstrip("\n").split("\n")
                if words[1] == "validate":
                    start = max(k for k, t in enumerate(text) if "accuracy per table" in t)
                    text = ["...", *text[start:]]
                out += [*command_lines, *text, "```"]
            i = end + 1
            continue
        i += 1
    return out


def validation_tables(lines: list[str]) -> list[str]:
    """Everything from the first line of ``clusterplan validate --markdown`` (its summary table's
    header) to the end of docs/validation.md is that command's output."""
    printed = _clusterplan("validate", "--markdown").stdout.rstrip("\n").split("\n")
    start = lines.index(printed[0])
    return [*lines[:start], *printed, ""] if lines[-1] == "" else [*lines[:start], *printed]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="report what would change; write nothing")
    args = parser.parse_args()
    changed = []
    for path, regenerate in ((ROOT / "README.md", readme_blocks),
                             (ROOT / "docs" / "validation.md", validation_tables)):
        before = path.read_text(encoding="utf-8").split("\n")
        after = regenerate(before)
        if after != before:
            changed.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text("\n".join(after), encoding="utf-8")
        print(f"{path.relative_to(ROOT)}: {'changed' if after != before else 'current'}", file=sys.stderr)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
