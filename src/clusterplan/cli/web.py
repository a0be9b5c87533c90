"""`clusterplan web`: the interactive planner in a browser."""

from __future__ import annotations

from typing import Annotated

import typer

from clusterplan.cli._common import clean_errors
from clusterplan.errors import SpecError


# ---- web -----------------------------------------------------------------------------------
@clean_errors
def web(
    host: Annotated[str, typer.Option(help="address to bind (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8050,
) -> None:
    """The interactive planner in a browser: Training, Serving and Failures pages, and a JSON
    API under /api/ answering what each command's --json prints (docs/web.md)."""
    import uvicorn

    from clusterplan.web.app import create_app

    if not 0 < port < 65536:
        raise SpecError("--port", port, "must be a TCP port, 1 to 65535")
    typer.echo(f"clusterplan web planner on http://{host}:{port}/ (API: /api/, list: /docs); Ctrl-C stops it",
               err=True)
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")
