"""`clusterplan catalog`: the catalog's entries and economics."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

import clusterplan.cli._common as _common
from clusterplan.catalog import (
    chip_names,
    load_chip,
    load_model,
    load_system,
    model_names,
    system_names,
)
from clusterplan.cli._common import (
    clean_errors,
    emit_json,
)
from clusterplan.errors import SpecError


# ---- catalog -------------------------------------------------------------------------------
@clean_errors
def catalog(
    kind: Annotated[str, typer.Argument(help="chips | systems | models | economics")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List catalog entries with their key figures (economics: every price and money
    assumption with its kind, published / estimate / assumption, and its source)."""
    from clusterplan.report.tables import catalog_rows

    if kind == "economics":
        _catalog_economics(as_json)
        return
    if kind not in ("chips", "systems", "models"):
        raise SpecError("kind", kind, "must be one of chips, systems, models, economics")
    loaders = {"chips": (chip_names, load_chip), "systems": (system_names, load_system),
               "models": (model_names, load_model)}
    names, loader = loaders[kind]
    specs = [loader(name) for name in names()]
    header, rows, records = catalog_rows(kind, specs)
    if as_json:
        emit_json({kind: records})
        return
    shown = list(range(len(header)))
    if kind == "models" and _common.console.width < 100:  # narrow: the columns that identify a model
        shown = [i for i, column in enumerate(header) if column not in ("ffn", "vocab")]
    if kind == "chips" and _common.console.width < 100:  # narrow: names and figures whole, family in --json
        shown = [i for i, column in enumerate(header) if column != "family"]
    table = Table(title=f"clusterplan catalog: {kind}")
    for index in shown:
        # Names stay whole (greppable at any terminal width); number columns never break.
        table.add_column(header[index], no_wrap=index == 0 or header[index] == "family")
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    _common.console.print(table)
    if len(shown) < len(header):
        _common.console.print(f"[dim]{', '.join(c for i, c in enumerate(header) if i not in shown)}: "
                      "at 100 columns or more, or --json[/]")


def _catalog_economics(as_json: bool) -> None:
    """catalog/economics.yaml: each number, its kind and its source."""
    from clusterplan.catalog import load_economics
    from clusterplan.costs.money import economics_records

    records = economics_records(load_economics())
    if as_json:
        emit_json(records)
        return
    table = Table(title="clusterplan catalog: economics")
    for column in ("name", "value", "kind", "source"):
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    for record in records:
        value = record["value"]
        table.add_row(record["name"], value if isinstance(value, str) else f"{value:,.4g}", record["kind"],
                      record["source"])
    _common.console.print(table)
