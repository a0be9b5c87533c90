"""The terminal side of every command: one width rule, tables that keep numbers whole, progress.

* Width: on a terminal, the terminal's; anywhere else (a pipe, a file, a CI log) ``$COLUMNS`` or
  80, never the width of a terminal that happens to hold stdin or stderr, so the same command
  prints the same text in a log as in a test.
* Tables: a column whose cells are numbers (with their units) is never wrapped, folded or cut;
  its header breaks between words instead, and label columns wrap (a word longer than the
  column folds). Rich then shrinks the label columns, never the numbers, to fit the width.
* Progress: on stderr only. On a terminal, one transient line redrawn at each step; elsewhere,
  one short line per step once the command has run for two seconds (``$CLUSTERPLAN_PROGRESS_AFTER``
  seconds: 0 for every step), so logs of quick commands stay empty and logs of slow ones say what
  is happening. Off a terminal the lines go to the process' stderr (file descriptor 2) itself,
  not to ``sys.stderr``: a caller that runs a command in-process and captures its output (a
  test's ``CliRunner``) gets the command's output, not its progress.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import suppress
from types import TracebackType
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.live import Live
from rich.table import Column, Table
from rich.text import Text

#: A cell that is a number: optional sign, ~, < or $, digits (thousands commas, decimals), then
#: at most two words (a unit, or a unit and a qualifier such as ``> HBM``).
_NUMBER_CELL = re.compile(r"[~<>+\-−$]*\d[\d,]*(\.\d+)?\s*%?(\s*\S+){0,3}")
#: Cells that say a number is missing; they do not make a column a label column.
_PLACEHOLDERS = {"", "-", "n/a", "never", "yes", "no", "none", "?"}


def _plain(cell: Any) -> str | None:
    """A cell's text without markup, or None for a renderable that is not text."""
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        try:
            return Text.from_markup(cell).plain
        except Exception:  # not valid markup: the text as it is
            return cell
    return None


def is_number_cell(cell: Any) -> bool:
    """Whether a cell holds a number (with an optional unit), as opposed to a label."""
    text = _plain(cell)
    return text is not None and _NUMBER_CELL.fullmatch(text.strip()) is not None


def is_number_column(column: Column) -> bool:
    """A column of numbers: every cell a number or a placeholder, at least one number."""
    texts = [_plain(cell) for cell in column.cells]
    if any(text is None for text in texts):
        return False
    values = [text.strip() for text in texts if text is not None and text.strip().lower() not in _PLACEHOLDERS]
    return bool(values) and all(_NUMBER_CELL.fullmatch(value) for value in values)


def _header_lines(header: str, width: int) -> str:
    """``header`` broken between words (and after hyphens) into lines of at most ``width``."""
    words = re.findall(r"\S+?-(?=\S)|\S+", header)
    lines: list[str] = []
    for word in words:
        joiner = "" if lines and lines[-1].endswith("-") else " "
        if lines and len(lines[-1]) + len(joiner) + len(word) <= width:
            lines[-1] += joiner + word
        else:
            lines.append(word)
    return "\n".join(lines)


def readable(table: Table) -> Table:
    """Make ``table`` keep its numbers whole at any width (see the module doc); returns it."""
    for column in table.columns:
        if is_number_column(column):
            column.no_wrap = True
            column.justify = "right"
            if isinstance(column.header, str) and column.header:
                widest = max((len(_plain(cell) or "") for cell in column.cells), default=0)
                words = max((len(word) for word in re.findall(r"\S+?-(?=\S)|\S+", column.header)), default=0)
                column.header = _header_lines(column.header, max(widest, words))
        elif not column.no_wrap:  # a label; one set no_wrap (a name to grep) stays whole
            column.overflow = "fold"
    return table


def columns_from_environment(environ: Any) -> int:
    """``$COLUMNS`` when it is a positive whole number, else 80."""
    columns = str(environ.get("COLUMNS", "")).strip()
    return int(columns) if columns.isdigit() and int(columns) > 0 else 80


class ReportConsole(Console):
    """A rich console with the width rule and the table rule of the module doc."""

    @property
    def size(self) -> ConsoleDimensions:
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(columns_from_environment(self._environ), self._height or 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def print(self, *objects: Any, **options: Any) -> None:
        super().print(*(readable(o) if isinstance(o, Table) else o for o in objects), **options)


def stderr_console() -> ReportConsole:
    """The console progress and notes go to (never stdout: stdout is the command's output)."""
    return ReportConsole(stderr=True)


def _quiet_seconds() -> float:
    """Seconds a command runs before its progress lines start: ``$CLUSTERPLAN_PROGRESS_AFTER``
    (a number of seconds) or 2."""
    try:
        return max(0.0, float(os.environ.get("CLUSTERPLAN_PROGRESS_AFTER", "2")))
    except ValueError:
        return 2.0


class StepProgress:
    """Progress of a long command on stderr (see the module doc): ``step(text)`` names what the
    command is doing now. Use as a context manager; it is silent for the first ``quiet_s``.

    It starts no thread (a transient line on a terminal is redrawn at each step), so the command
    may fork worker processes while it runs."""

    def __init__(self, command: str, *, console: Console | None = None, quiet_s: float | None = None) -> None:
        self.command = command
        self.console = console or stderr_console()
        self._to_fd = console is None  # lines off a terminal: straight to file descriptor 2
        self.quiet_s = quiet_s if quiet_s is not None else _quiet_seconds()
        self.start = time.perf_counter()
        self.steps = 0
        self.printed = False
        self._live: Live | None = None

    def __enter__(self) -> StepProgress:
        self.start = time.perf_counter()
        if self.console.is_terminal:
            self._live = Live(Text(f"{self.command}: starting"), console=self.console, auto_refresh=False,
                              transient=True, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._live is not None:
            self._live.stop()
        elif self.printed and kind is None:
            self._line(f"done in {self.elapsed():.1f} s", stamp=False)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def step(self, text: str) -> None:
        """The command has started ``text`` (a short phrase: 'searching training plans')."""
        self.steps += 1
        if self._live is not None:
            self._live.update(Text(f"{self.command}: {text} [{self.elapsed():.0f} s]"), refresh=True)
        elif self.elapsed() >= self.quiet_s:
            self._line(text)

    def _line(self, text: str, stamp: bool = True) -> None:
        """One line: the command, what it is doing and, with ``stamp``, the seconds so far."""
        self.printed = True
        line = f"{self.command}: {text}" + (f" [{self.elapsed():.1f} s]" if stamp else "")
        if self._to_fd:
            with suppress(OSError):  # no stderr (closed): progress is not worth failing for
                os.write(2, (line + "\n").encode("utf-8", "replace"))
        else:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
