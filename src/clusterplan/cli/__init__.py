"""Command-line interface (typer + rich): human units at the edge, SI inside.

Every refusal is one line on stderr naming the field, the value and the rule, with exit code 2.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from pydantic import ValidationError

from clusterplan.api._edge import flag  # tests name the option of a Plan field by it
from clusterplan.cli import (
    campus,
    capacity,
    catalog,
    fleet,
    rainier,
    reliability,
    search,
    serve,
    sweep,
    train,
    validate,
    web,
)
from clusterplan.cli._common import (
    EXIT_ABORTED,
    EXIT_BAD_INPUT,
    EXIT_NO_ANSWER,
    clean_errors,
    emit_json,
    error_line,
    one_line,
    output_dir,
    output_file,
    refuse,
    write_atomically,
    write_or_refuse,
)
from clusterplan.errors import MAX_VALUE_CHARS, SpecError, shorten, show

__all__ = ["EXIT_ABORTED", "EXIT_BAD_INPUT", "EXIT_NO_ANSWER", "app", "clean_errors", "emit_json", "error_line",
           "flag", "main", "one_line", "output_dir", "output_file", "refuse", "write_atomically", "write_or_refuse"]

app = typer.Typer(
    help="clusterplan: plan and simulate AI supercomputers from public specifications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: option names stay whole at 80 columns
)

#: The commands, in the order `clusterplan --help` lists them; each module holds one (validate.py two).
for _command in (train.train, catalog.catalog, validate.validate, search.search, sweep.sweep, fleet.fleet,
                 campus.campus, reliability.reliability, capacity.capacity, validate.calibrate, rainier.rainier,
                 serve.serve, web.web):
    app.command()(_command)


def _value_given(param: Any, argv: list[str]) -> str | None:
    """The value the user typed for an option that failed type conversion, if any."""
    for name in getattr(param, "opts", None) or ():
        for index, token in enumerate(argv):
            if token == name and index + 1 < len(argv):
                return argv[index + 1]
            if token.startswith(name + "="):
                return token[len(name) + 1:]
    return None


def _usage_message(error: Exception, argv: list[str]) -> str:
    """A usage error (bad option type, unknown option) in one line, the value it names shortened."""
    formatter = getattr(error, "format_message", None)
    message = formatter() if callable(formatter) else str(error)
    given = _value_given(getattr(error, "param", None), argv)
    if given is not None:
        message = f"{message} (got {show(given)})"
    for token in sorted(argv, key=len, reverse=True):  # click quotes what it was given, whole
        if len(token) > MAX_VALUE_CHARS and token in message:
            message = message.replace(token, shorten(token))
    return shorten(" ".join(message.split()), 4 * MAX_VALUE_CHARS)


def _aborted() -> None:
    """Ctrl-C: one line and exit code 130; a second Ctrl-C while leaving is ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    error_line("aborted")
    sys.exit(EXIT_ABORTED)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every way a command ends maps to one exit code (README, "Exit codes").

    0 answered; 1 a valid question answered no (one ``error:`` line says why); 2 bad input,
    usage errors included (one ``error:`` line naming the field, the value and the rule);
    130 interrupted by Ctrl-C (``error: aborted``, no traceback from any worker)."""
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        result = app(args=args, standalone_mode=False)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _aborted()
    except typer.TyperException as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            typer.echo(getattr(error, "ctx").get_help())  # noqa: B009
            sys.exit(0)
        error_line(_usage_message(error, args))
        sys.exit(EXIT_BAD_INPUT)
    except (SpecError, ValidationError) as error:  # raised outside a command (an option callback)
        code, message = one_line(error) or (EXIT_BAD_INPUT, str(error))
        error_line(message)
        sys.exit(code)
    if result == EXIT_ABORTED:  # typer turns a KeyboardInterrupt inside a command into exit 130
        _aborted()
    if isinstance(result, int) and result:
        sys.exit(result)
