"""The ``clusterplan`` console script: Ctrl-C from the first instant is ``error: aborted``.

``clusterplan.cli.main`` handles Ctrl-C once its imports (typer, rich, pydantic, numpy: up to a
couple of seconds) are done; this function, which imports nothing but the standard library
before them, covers those too. The message and exit code are the CLI's (``cli._aborted``)."""

from __future__ import annotations

import signal
import sys

#: Exit code of an interrupted command (``cli._common.EXIT_ABORTED``: not imported, it is heavy).
EXIT_ABORTED = 130


def main() -> None:
    """Import the CLI and run it; a KeyboardInterrupt anywhere in between ends in one line on
    stderr and exit code 130, no traceback."""
    try:
        from clusterplan.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while leaving is ignored
        sys.stderr.write("error: aborted\n")
        sys.stderr.flush()
        sys.exit(EXIT_ABORTED)
