"""Rich tables for the CLI. Records arrive in SI units; this is where they become human units."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from clusterplan import units
from clusterplan.costs.attention import DEFAULT_REFERENCE_KERNEL, IMPLEMENTATIONS
from clusterplan.specs import Chip, Model, System
from clusterplan.specs.accuracy import CrossValSummary, FamilyErrors
from clusterplan.validation.bands import COVERAGE, BandCheck
from clusterplan.validation.harness import Result, by_table, mape, mape_at_defaults, memory_tested


def _share(part: float, total: float) -> str:
    return f"{100.0 * part / total:5.1f} %" if total > 0 else "-"


def mfu_basis(precision: str) -> str:
    """What MFU is a share of: the chip's dense peak at the plan's matmul precision."""
    return f"{precision} dense peak"


MFU_NOTE = ("MFU and HFU: model (hardware) FLOP/s per chip over the chip's dense peak at each plan's "
            "matmul precision (fp8 plans: the fp8 peak, twice the bf16 one on most chips).")


def with_unit(header: str, unit: str) -> str:
    """A column header with the unit its numbers are in, last: ``memory GiB``."""
    return f"{header} {unit}" if unit else header


def train_table(console: Console, record: dict[str, Any]) -> None:
    plan = record["plan"]
    title = (f"{record['model']} on {record['chips']:,} x {record['chip']} ({record['system']}): "
             f"TP{plan['tp']} PP{plan['pp']}" + (f" VP{plan['vp']}" if plan["vp"] > 1 else "")
             + (f" CP{plan['cp']}" if plan["cp"] > 1 else "") + f" DP{plan['dp']}"
             + (f" EP{plan['ep']}" if plan["ep"] > 1 else ""))
    summary = Table(title=title, show_header=False)
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    summary.add_row("step time", units.format_duration(record["step_time_s"])
                    + _band(record, "step_time_s", units.format_duration))
    summary.add_row("tokens/s per chip", f"{record['tokens_per_s_per_chip']:,.0f}")
    summary.add_row("tokens/s (job)", units.format_count(record["tokens_per_s"]))
    summary.add_row("model TFLOP/s per chip", f"{record['model_tflops_per_chip']:.1f}")
    summary.add_row(f"MFU / HFU (of {mfu_basis(plan['precision'])})",
                    f"{100 * record['mfu']:.1f} % / {100 * record['hfu']:.1f} %"
                    + _band(record, "mfu", lambda v: f"{100 * v:.0f} %"))
    clock = record.get("sustained_clock", 1.0)
    if clock != 1.0:
        summary.add_row("sustained clock (fitted)", f"{clock:.2f} of the datasheet's")
    kernel_rate = record.get("attention_kernel_rate", 1.0)
    if kernel_rate != 1.0:
        summary.add_row(f"attention kernel ({record['attention_kernel']})",
                        f"{kernel_rate:.2f}x the rate of "
                        f"{IMPLEMENTATIONS[record.get('attention_reference_kernel', DEFAULT_REFERENCE_KERNEL)]}'s "
                        "(measured)")
    fits = "[green]fits[/]" if record["fits_memory"] else "[red]does NOT fit[/]"
    summary.add_row("memory per chip", f"{units.format_bytes(record['memory_bytes_per_chip'])} of "
                    f"{units.format_bytes(record['memory_capacity_bytes'])} ({fits})")
    if "time_to_train_s" in record:
        summary.add_row(f"time to train {units.format_count(record['tokens'])} tokens",
                        units.format_duration(record["time_to_train_s"])
                        + _band(record, "time_to_train_s", units.format_duration))
        summary.add_row("chip-hours", units.format_count(record["chip_hours"]))
        failures = record.get("reliability")
        if failures:
            label = record.get("reliability_label", "default recovery")
            summary.add_row(f"with failures ({label})",
                            f"{units.format_duration(failures['time_to_train_s'])}, goodput "
                            f"{100 * failures['goodput']:.1f} %, ~{failures['interruptions_expected']:,.0f} "
                            "interruptions" if not failures.get("outpaced") else
                            f"failures outpace recovery (goodput {100 * failures['goodput']:.2f} %)")
    power = record["power_w"]
    summary.add_row("power (IT / facility)", f"{power['it_w'] / 1e6:,.2f} MW / {power['facility_w'] / 1e6:,.2f} MW "
                    f"at {100 * record['activity']:.0f} % activity")
    if "cost_per_chip_hour_usd" in record:
        summary.add_row("cost per chip-hour (TCO)", f"${record['cost_per_chip_hour_usd']:.2f}")
        summary.add_row(*_owned_vs_rented(record))
    if "energy_mwh" in record:
        summary.add_row("energy / emissions", f"{record['energy_mwh']:,.0f} MWh / {record['co2_tonnes']:,.0f} t CO2")
    if "cost_usd" in record:
        summary.add_row("cost of the run", f"${record['cost_usd'] / 1e6:,.1f} M"
                        + _band(record, "cost_usd", lambda v: f"${v / 1e6:,.1f} M"))
    split = record.get("layer_split")
    if split:
        how = {"automatically": "balanced, chosen automatically", "given": "given", "even": "even"}
        summary.add_row("layers per stage", f"{split['split']} ({how[split['chosen']]})")
    if record.get("recompute_chosen"):
        summary.add_row("recompute", _recompute_chosen(record))
    console.print(summary)
    band_notes(console, record)
    assumed = record.get("assumed")
    if assumed:
        top = assumed[0]
        console.print(f"assumed {top['field']}={_setting(top['value'])}; {top['field']}={_setting(top['alternative'])} "
                      f"would change the step by {100 * top['step_change']:+.1f} %"
                      + ("" if top["fits_memory_if_changed"] else " (and not fit in memory)"),
                      highlight=False)
    step = record["step_time_s"]
    parts = {name: value for name, value in record["time_breakdown_s"].items() if value > 0}
    unit, cells = units.format_column(list(parts.values()), "duration")
    breakdown = Table(title="step time breakdown")
    breakdown.add_column("component")
    breakdown.add_column(with_unit("time", unit), justify="right")
    breakdown.add_column("share", justify="right")
    for (name, value), cell in zip(parts.items(), cells, strict=True):
        breakdown.add_row(name.replace("_", " "), cell, _share(value, step))
    console.print(breakdown)
    memory_table(console, record, title="memory per chip")


def _recompute_chosen(record: dict[str, Any]) -> str:
    """'selective core_attn,mlp (chosen automatically: the default needs 323.2 GiB)'."""
    chosen = record["recompute_chosen"]
    modules = ",".join(chosen["recompute_modules"])
    return (f"{chosen['recompute']}{' ' + modules if modules else ''} (chosen automatically: the "
            f"default needs {units.format_bytes(chosen['default_memory_bytes_per_chip'])})")


def memory_table(console: Console, record: dict[str, Any], title: str | None = None) -> None:
    """The memory per chip of a train record, part by part, against the chip's HBM (the table
    ``train`` prints alone for a plan that does not fit)."""
    total = record["memory_bytes_per_chip"]
    capacity = record["memory_capacity_bytes"]
    if title is None:
        title = (f"memory per chip: {units.format_bytes(total)} of {units.format_bytes(capacity)}"
                 + ("" if record["fits_memory"] else " (does NOT fit)"))
    parts = list(record["memory_breakdown"].values())
    extra = [] if record["fits_memory"] else [total, capacity]
    unit, cells = units.format_column(parts + extra, "bytes", prefix="Gi")
    memory = Table(title=title)
    memory.add_column("component")
    memory.add_column(unit, justify="right")
    memory.add_column("share", justify="right")
    for (name, value), cell in zip(record["memory_breakdown"].items(), cells, strict=False):
        memory.add_row(name, cell, _share(value, total))
    if not record["fits_memory"]:
        memory.add_row("[bold]total[/]", cells[-2], _share(total, total))
        memory.add_row("HBM of the chip", cells[-1], _share(capacity, total))
    console.print(memory)


def _band(record: dict[str, Any], field: str, fmt: Callable[[float], str]) -> str:
    """`` (low to high)`` of a banded figure, empty where the record has no band for it."""
    band = record.get("bands", {}).get(field)
    if not band:
        return ""
    low, high = (fmt(v) for v in band)
    return f" ({low} to {high})"


def band_notes(console: Console, record: dict[str, Any]) -> None:
    """Where the bands come from and every reason the answer is outside validated ground."""
    if record.get("band_basis"):
        console.print(f"ranges hold {100 * record['band_coverage']:.0f} % of the runs of publications left out "
                      f"of the fit; drawn from {record['band_basis']}", highlight=False)
    for reason in record.get("extrapolation", []):
        console.print(f"extrapolation: {reason}", highlight=False)


def _setting(value: Any) -> str:
    """A plan setting as typed on the command line (``on``/``off`` for switches)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def catalog_rows(kind: str, specs: Sequence[Any]) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """Header, formatted rows and JSON records for ``clusterplan catalog KIND``."""
    records = [spec.model_dump(mode="json") for spec in specs]
    if kind == "chips":
        chips = [c for c in specs if isinstance(c, Chip)]
        header = ["chip", "family"]
        columns: list[list[str]] = [[c.name for c in chips], [c.family for c in chips]]
        for name, values, kind_of, prefix, decimals in (
                ("bf16", [c.peak_flops.get("bf16") for c in chips], "flops", "T", 0),
                ("fp8", [c.peak_flops.get("fp8") for c in chips], "flops", "T", 0),
                ("fp4", [c.peak_flops.get("fp4") for c in chips], "flops", "T", 0),
                ("HBM", [c.hbm_bytes for c in chips], "bytes", "Gi", 0),
                ("HBM BW", [c.hbm_bandwidth for c in chips], "bandwidth", "T", 1),
                ("TDP", [c.tdp_w for c in chips], "power", "", 0)):
            unit, cells = units.format_column(values, kind_of, prefix=prefix, decimals=decimals)
            header.append(with_unit(name, unit))
            columns.append(cells)
        rows = [list(row) for row in zip(*columns, strict=True)]
    elif kind == "systems":
        header = ["system", "chip", "scale-up", "tiers (per-chip bandwidth per direction)"]
        rows = [[s.name, s.chip, str(s.scale_up_size),
                 "; ".join(f"{t.name} {t.topology}"
                           + (f" {'x'.join(map(str, t.dims))}" if t.dims else "")
                           + f" {t.size or 'all'}: {units.format_bandwidth(t.bandwidth)}"
                           for t in s.tiers)] for s in specs if isinstance(s, System)]
    else:
        models = [m for m in specs if isinstance(m, Model)]
        _, total = units.format_column([m.total_params for m in models], "count", prefix="G")
        _, active = units.format_column([m.active_params for m in models], "count", prefix="G")
        header = ["model", "params G", "active G", "layers", "hidden", "heads/kv", "ffn", "vocab"]
        rows = [[m.name, total[i], active[i], str(m.layers), f"{m.hidden_size:,}", f"{m.attention_heads}/{m.kv_heads}",
                 f"{m.ffn_hidden_size:,}", f"{m.vocab_size:,}"] for i, m in enumerate(models)]
    return header, rows, records


def _fmt(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if metric == "step_time_s":
        return f"{value:.2f} s"
    if metric in ("ttft_s", "tpot_s"):
        return f"{1000 * value:.1f} ms"
    return f"{value:,.0f}" if metric in ("tokens_per_s_per_chip", "output_tokens_per_s") else f"{value:.1f}"


METRIC_NAMES = {"step_time_s": "step time", "tokens_per_s_per_chip": "tokens/s/chip",
                "model_tflops_per_chip": "TFLOP/s/chip", "output_tokens_per_s": "output tokens/s",
                "ttft_s": "TTFT", "tpot_s": "TPOT"}


def _borrowed(name: str, family: FamilyErrors) -> str:
    """The stages a family takes from other families: 'MoE from blackwell, hopper; ...'."""
    return "; ".join(f"{s.stage} from {', '.join(s.families) if s.families else 'the priors'}"
                     for s in family.stages if s.families != [name])


def _pct_cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f} %"


def _crossval_table_rows(results: Sequence[Result], crossval: CrossValSummary) -> list[tuple[str, ...]]:
    """(table, rows, out of sample, family out, in sample, fits) per table."""
    out: list[tuple[str, ...]] = []
    for name, rows in by_table(results).items():
        errors = crossval.tables.get(name)
        out.append((name, str(sum(r.error is not None for r in rows)),
                    _pct_cell(errors.mape_out_of_sample_pct if errors else None),
                    _pct_cell(errors.mape_family_out_pct if errors else None), _pct_cell(mape(rows)),
                    _fits_cell(rows)))
    return out


def _crossval_mean_rows(results: Sequence[Result], crossval: CrossValSummary) -> list[tuple[str, ...]]:
    """(what, out of sample, family out, in sample) per mean of ``summary_means`` over the
    results' tables: over tables, over rows, and over each stage's rows."""
    from clusterplan.validation.crossval import summary_means

    out: list[tuple[str, ...]] = []
    for mean in summary_means(crossval, set(by_table(results))):
        what = (f"{mean.count} tables" if mean.over == "tables"
                else f"{mean.count} rows" if mean.stage == "all" else f"  {mean.stage} rows ({mean.count})")
        out.append((what, _pct_cell(mean.mape_out_of_sample_pct), _pct_cell(mean.mape_family_out_pct),
                    _pct_cell(mean.mape_pct)))
    return out


def _crossval_family_rows(crossval: CrossValSummary) -> list[tuple[str, ...]]:
    """(family, own parameters, own rows, in sample, family out, stages from others) per family."""
    return [(name, str(family.own_parameters), str(family.own_rows), _pct_cell(family.mape_pct),
             _pct_cell(family.mape_family_out_pct), _borrowed(name, family) or "-")
            for name, family in crossval.families.items()]


def crossval_tables(console: Console, results: Sequence[Result], crossval: CrossValSummary, origin: str) -> None:
    """Out-of-sample error first: per table (refitted without it; without each row's chip
    family), then in sample; and how many parameters each family fits on how many rows."""
    summary = Table(title="accuracy per table: mean absolute % error")
    for column in ("table", "rows", "out of sample", "family out", "in sample", "fits"):
        summary.add_column(column, justify="left" if column == "table" else "right", overflow="fold")
    for row in _crossval_table_rows(results, crossval):
        summary.add_row(*row)
    console.print(summary)
    means = Table(title="mean absolute % error (wide EP left out)")
    for column in ("mean over", "out of sample", "family out", "in sample"):
        means.add_column(column, justify="left" if column == "mean over" else "right", overflow="fold")
    for row in _crossval_mean_rows(results, crossval):
        means.add_row(*row)
    console.print(means)
    for what, cell in (("fits", _fits_at_defaults_cell), ("in-sample error", _error_at_defaults_cell)):
        note = _at_defaults_note(results, what, cell)
        if note:
            console.print(f"[dim]{note}[/]")
    families = Table(title="fitted parameters per chip family")
    for column in ("family", "own params", "own rows", "in sample", "family out", "stages from others"):
        families.add_column(column, justify="left" if column in ("family", "stages from others") else "right",
                            overflow="fold")
    for row in _crossval_family_rows(crossval):
        families.add_row(*row)
    console.print(families)
    console.print(f"[dim]out of sample: {origin}. 'out of sample' refits with the table left out; "
                  "'family out' with each row's chip family left out (a chip never published); "
                  "'in sample' is the shipped fit, which saw every row.[/]")


def _at_defaults_note(results: Sequence[Result], what: str, cell: Callable[[Sequence[Result]], str | None]) -> str:
    """One line naming the tables whose ``cell`` changes when the settings only their recipes
    give are left at the CLI's defaults, as a user who types the printed plan runs them (the
    cell is None where nothing changes)."""
    parts = [f"{name} {text}" for name, rows in by_table(results).items() if (text := cell(rows))]
    if not parts:
        return ""
    return f"{what} with the recipe-only settings at the CLI's defaults: " + ", ".join(parts) + "."


def _fits_at_defaults_cell(rows: Sequence[Result]) -> str | None:
    """``fit/checked`` where a different number of printed plans fit at the defaults than with
    their recipes (fewer: a recipe setting made them fit; more: the recompute `train` chooses
    fits where the recipe's did not)."""
    checked = [r for r in rows if r.fits_at_defaults is not None]
    fit = sum(bool(r.fits_at_defaults) for r in checked)
    return f"{fit}/{len(checked)}" if checked and fit != sum(bool(r.fits) for r in checked) else None


def _error_at_defaults_cell(rows: Sequence[Result]) -> str | None:
    """The in-sample MAPE at the defaults, where it differs from the recipes' (to 0.1 point)."""
    if not any(r.predicted_at_defaults is not None for r in rows):
        return None
    at_defaults = f"{mape_at_defaults(rows):.1f}"
    return f"{at_defaults} %" if at_defaults != f"{mape(rows):.1f}" else None


def _memory_table(console: Console, name: str, rows: Sequence[Result]) -> None:
    """A memory-only table: each configuration's predicted memory per chip against its HBM."""
    table = Table(title=f"{name} (memory only: each configuration ran, so it fits)")
    for column in ("row", "memory GiB", "HBM GiB", "fits"):
        table.add_column(column, justify="left" if column == "row" else "right")
    for r in rows:
        assert r.memory_bytes is not None and r.capacity_bytes is not None
        verdict = "yes" if r.fits else "[red]no[/]"
        table.add_row(r.case.label, f"{r.memory_bytes / 2**30:.1f}", f"{r.capacity_bytes / 2**30:.1f}", verdict)
    console.print(table)


def _fits_cell(rows: Sequence[Result]) -> str:
    checked = [r for r in rows if r.fits is not None]
    return f"{sum(bool(r.fits) for r in checked)}/{len(checked)}" if checked else "-"


def not_modelled(rows: Sequence[Result], tested: Sequence[Result]) -> list[Result]:
    """Rows with no error that are not memory tests: the rows listed with their skip reason."""
    return [r for r in rows if r.error is None and r not in tested]


def _error_table(console: Console, name: str, modelled: Sequence[Result]) -> None:
    """A table of published against predicted, with each row's error and memory per chip."""
    kinds = sorted({METRIC_NAMES[r.case.metric] for r in modelled})
    table = Table(title=f"{name}" + (f" ({kinds[0]})" if len(kinds) == 1 else ""))
    _, memory = units.format_column([r.memory_bytes for r in modelled], "bytes", prefix="Gi", missing="")
    columns = ["row", *(["metric"] if len(kinds) > 1 else []), "published", "predicted", "error", "memory GiB"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("row", "metric") else "right")
    for r, cell in zip(modelled, memory, strict=True):
        assert r.error is not None
        colour = "green" if abs(r.error) <= 0.05 else "yellow" if abs(r.error) <= 0.10 else "red"
        table.add_row(r.case.label, *([METRIC_NAMES[r.case.metric]] if len(kinds) > 1 else []),
                      _fmt(r.case.metric, r.case.published), _fmt(r.case.metric, r.predicted),
                      f"[{colour}]{100 * r.error:+.1f} %[/]",
                      cell if r.fits is not False else f"[red]{cell} >HBM[/]")
    console.print(table)


def validation_report(console: Console, results: Sequence[Result], *, show_skipped: bool,
                      crossval: CrossValSummary | None = None, crossval_origin: str = "",
                      band_checks: Sequence[BandCheck] = ()) -> None:
    """``validate`` in the terminal (its --json record: ``api/validate.py: validation_records``)."""
    summary = Table(title="clusterplan validate: mean absolute % error per table")
    for column in ("table (metric)", "rows modelled", "not modelled", "MAPE", "max |error|", "fits"):
        summary.add_column(column, justify="right" if column != "table (metric)" else "left")
    for name, rows in by_table(results).items():
        modelled = [r for r in rows if r.error is not None]
        worst = max((abs(r.error) for r in modelled if r.error is not None), default=math.nan)
        tested = memory_tested(rows) if not modelled else []
        skipped = not_modelled(rows, tested)
        if tested:
            _memory_table(console, name, tested)
        else:
            _error_table(console, name, modelled)
        if show_skipped and skipped:
            console.print(f"[dim]{name}: {len(skipped)} rows not modelled:[/]")
            for r in skipped:
                console.print(f"[dim]  - {r.case.label}: {r.case.skip}[/]")
        if tested:
            summary.add_row(f"{name} (memory)", str(len(tested)), str(len(skipped)), "-", "-", _fits_cell(rows))
        else:
            metrics = ", ".join(sorted({METRIC_NAMES[r.case.metric] for r in rows}))
            summary.add_row(f"{name} ({metrics})", str(len(modelled)), str(len(skipped)), f"{mape(rows):.1f} %",
                            f"{100 * worst:.1f} %", _fits_cell(rows))
    console.print(summary)
    if crossval is not None:
        crossval_tables(console, results, crossval, crossval_origin)
    if band_checks:
        band_check_table(console, band_checks)


def _band_check_rows(checks: Sequence[BandCheck]) -> list[tuple[str, ...]]:
    """(stage, bands from, units left out, runs, held unwidened, held widened, widened by) per check."""
    return [(check.stage, "family left out" if check.transfer else "table left out",
             f"{check.units} {'families' if check.transfer else 'tables'}",
             str(check.rows), f"{100 * check.held_unwidened:.0f} %", f"{100 * check.held_widened:.0f} %",
             f"x{check.widened_by:.2f}") for check in checks]


BAND_CHECK_NOTE = ("Each table's runs (for transfer bands, each chip family's) banded from the others' "
                   "runs, the widening measured without them too: the share of runs the model never saw "
                   "that fall inside (each table, or family, weighing equally; validation/bands.py).")


def band_check_table(console: Console, checks: Sequence[BandCheck]) -> None:
    """How often the error bands held the runs of a publication they were not drawn from."""
    table = Table(title=f"error bands ({100 * COVERAGE:.0f} % nominal) on runs the fit never saw")
    for column in ("stage", "bands from", "left out", "runs", "held", "widened, held", "widened by"):
        table.add_column(column, justify="left" if column in ("stage", "bands from") else "right", overflow="fold")
    for row in _band_check_rows(checks):
        table.add_row(*row)
    console.print(table)
    console.print(f"[dim]{BAND_CHECK_NOTE}[/]")


def validation_markdown(results: Sequence[Result], crossval: CrossValSummary | None = None,
                        band_checks: Sequence[BandCheck] = ()) -> str:
    """The validation report as Markdown (docs/validation.md embeds it): out-of-sample errors
    first when a cross-validation is given."""
    lines = _crossval_markdown(results, crossval) if crossval is not None else []
    if band_checks:
        lines += [f"| stage | bands from | left out | runs | held ({100 * COVERAGE:.0f} % nominal) | widened, held | "
                  "widened by |", "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {' | '.join(row)} |" for row in _band_check_rows(band_checks)]
        lines += ["", BAND_CHECK_NOTE, ""]
    lines += ["| table | metric | rows modelled | rows not modelled | MAPE | max abs error | fit in memory |",
             "|---|---|---:|---:|---:|---:|---:|"]
    tables = by_table(results)
    for name, rows in tables.items():
        modelled = [r for r in rows if r.error is not None]
        worst = max((abs(r.error) for r in modelled if r.error is not None), default=math.nan)
        tested = memory_tested(rows)
        if tested and not modelled:
            lines.append(f"| {name} | memory only | {len(tested)} | {len(rows) - len(tested)} | - | - | "
                         f"{_fits_cell(rows)} |")
            continue
        metrics = ", ".join(sorted({METRIC_NAMES[r.case.metric] for r in rows}))
        lines.append(f"| {name} | {metrics} | {len(modelled)} | {len(rows) - len(modelled)} | "
                     f"{mape(rows):.1f} % | {100 * worst:.1f} % | {_fits_cell(rows)} |")
    for name, rows in tables.items():
        tested = memory_tested(rows) if not any(r.error is not None for r in rows) else []
        if tested:
            lines += ["", f"### {name}", "", "Memory only: each configuration ran, so it fits.", "",
                      "| row | memory GiB | HBM GiB | fits |", "|---|---:|---:|---|"]
            lines += [f"| {r.case.label} | {(r.memory_bytes or 0) / 2**30:.1f} | {(r.capacity_bytes or 0) / 2**30:.1f} "
                      f"| {'yes' if r.fits else '**no**'} |" for r in tested]
        else:
            lines += ["", f"### {name}", "", "| row | metric | published | predicted | error |",
                      "|---|---|---:|---:|---:|"]
            lines += [f"| {r.case.label} | {METRIC_NAMES[r.case.metric]} | {_fmt(r.case.metric, r.case.published)} "
                      f"| {_fmt(r.case.metric, r.predicted)} | {100 * r.error:+.1f} % |"
                      for r in rows if r.error is not None]
        skipped = not_modelled(rows, tested)
        if skipped:
            lines += ["", f"Rows not modelled ({len(skipped)}):", ""]
            lines += [f"- {r.case.label}: {r.case.skip}" for r in skipped]
    return "\n".join(lines) + "\n"


def _crossval_markdown(results: Sequence[Result], crossval: CrossValSummary) -> list[str]:
    lines = ["| table | rows | out of sample (table left out) | family left out | in sample | fit in memory |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {' | '.join(row)} |" for row in _crossval_table_rows(results, crossval)]
    lines += ["", "| mean over (wide EP left out) | out of sample | family left out | in sample |",
              "|---|---:|---:|---:|"]
    lines += [f"| {' | '.join(cell.strip() for cell in row)} |" for row in _crossval_mean_rows(results, crossval)]
    lines += ["", "| family | parameters fitted on its own rows | own rows | in sample | family left out | "
              "stages taken from other families |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {' | '.join(row)} |" for row in _crossval_family_rows(crossval)]
    return [*lines, ""]


def search_table(console: Console, result: Any) -> None:
    """Ranked plans of ``clusterplan search`` with the reason each loses to the best."""
    console.print(f"{result.plans_enumerated:,} plans enumerated, {result.plans_fitting:,} fit in memory, "
                  f"{result.plans_timed:,} timed after exact pruning, in {result.search_time_s:.3f} s "
                  f"(objective: {result.objective})")
    if not result.best:
        return
    if console.width < 120:  # narrow terminals: the layout in one folded column
        _search_table_narrow(console, result)
    else:
        _search_table_wide(console, result)
    console.print(f"[dim]{MFU_NOTE}[/]")
    best = result.best[0]
    if "time_to_train_s" in best:
        cost = f" for ${best['cost_usd'] / 1e6:,.1f} M" if "cost_usd" in best else ""
        console.print(f"best plan: {units.format_duration(best['time_to_train_s'])} to train "
                      f"{units.format_count(best['tokens'])} tokens on {best['chips']:,} chips{cost}")
        ranges = [_band(best, "time_to_train_s", units.format_duration).strip(" ()"),
                  _band(best, "cost_usd", lambda v: f"${v / 1e6:,.1f} M").strip(" ()")]
        if any(ranges):
            console.print("best plan, range: " + ", ".join(r for r in ranges if r), highlight=False)
    band_notes(console, best)
    limits = _search_limits(result.constraints)
    if limits:
        console.print(f"constraints: {limits}; {result.plans_meeting_constraints:,} timed plans meet them",
                      highlight=False)
        for risk in result.constraints.at_risk(best):
            console.print(f"at risk: {risk}", highlight=False)
    if "command" in best:
        from clusterplan.training.command import wrap_command

        console.print("rerun the best plan:", highlight=False)
        for line in wrap_command(best["command"], width=min(console.width, 100)):
            console.print(line, highlight=False, markup=False, soft_wrap=True)


def _search_limits(constraints: Any) -> str:
    """The search's constraints in words (empty when none)."""
    limits = []
    if constraints.deadline_s is not None:
        limits.append(f"deadline {units.format_duration(constraints.deadline_s)}")
    if constraints.budget_usd is not None:
        limits.append(f"budget ${constraints.budget_usd / 1e6:,.1f} M")
    if constraints.max_chips is not None:
        limits.append(f"at most {constraints.max_chips:,} chips")
    return ", ".join(limits)


def _step_and_memory(result: Any) -> tuple[str, list[str], list[str]]:
    """The step column's unit, its cells and the memory cells (GiB) of the ranked plans."""
    unit, steps = units.format_column([r["step_time_s"] for r in result.best], "duration")
    _, memory = units.format_column([r["memory_bytes_per_chip"] for r in result.best], "bytes", prefix="Gi")
    return unit, steps, memory


def _search_table_narrow(console: Console, result: Any) -> None:
    unit, steps, memory = _step_and_memory(result)
    table = Table(title="best plans")
    for column in ("#", "plan", with_unit("step", unit), "MFU", "memory GiB", "why not first"):
        table.add_column(column)
    for rank, record in enumerate(result.best, start=1):
        plan = record["plan"]
        layout = [f"{name.upper()}{plan[name]}" for name in ("tp", "pp", "vp", "cp", "ep") if plan[name] > 1]
        layout += [f"DP{plan['dp']}", f"mb{plan['micro_batch']}", plan["recompute"], f"Z{plan['zero']}",
                   plan["precision"], f"on {record['chips']:,}"]
        table.add_row(str(rank), " ".join(layout), steps[rank - 1], f"{100 * record['mfu']:.1f} %",
                      memory[rank - 1], record["why_not_best"])
    console.print(table)


def _search_table_wide(console: Console, result: Any) -> None:
    unit, steps, memory = _step_and_memory(result)
    table = Table(title="best plans")
    for column in ("#", "chips", "TP", "PP", "VP", "CP", "EP", "DP", "mb", "recompute", "ZeRO", "prec",
                   with_unit("step", unit), "MFU", "memory GiB", "why not first"):
        table.add_column(column, justify="left" if column in ("recompute", "prec", "why not first") else "right",
                         overflow="fold")
    for rank, record in enumerate(result.best, start=1):
        plan = record["plan"]
        table.add_row(str(rank), f"{record['chips']:,}", str(plan["tp"]), str(plan["pp"]), str(plan["vp"]),
                      str(plan["cp"]), str(plan["ep"]), str(plan["dp"]), str(plan["micro_batch"]),
                      plan["recompute"], str(plan["zero"]), plan["precision"],
                      steps[rank - 1], f"{100 * record['mfu']:.1f} %", memory[rank - 1], record["why_not_best"])
    console.print(table)


def _interval_text(record: dict[str, Any]) -> str:
    text = units.format_duration(record["checkpoint_interval_s"])
    if record.get("checkpoint_interval_clamped"):
        text += f" (raised to {record['checkpoint_interval_floor_reason']})"
    return text


def reliability_table(console: Console, record: dict[str, Any]) -> None:
    """``clusterplan reliability``: one job's failures, recovery, checkpoints and goodput."""
    table = Table(title=f"reliability: {record['model']} on {record['chips']:,} x {record['system']}",
                  show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("recovery", record["recovery_label"])
    if record.get("recompute_chosen"):
        table.add_row("recompute", _recompute_chosen(record))
    table.add_row("interruptions per day", f"{record['interruptions_per_day']:,.1f} unexpected + "
                  f"{record['planned_interruptions_per_day']:,.2f} planned")
    table.add_row("mean time between failures", units.format_duration(record["mtbf_s"]))
    table.add_row("detection + restart", f"{units.format_duration(record['detection_s'])} + "
                  f"{units.format_duration(record['restart_s'])}")
    table.add_row("restore / node replacement", f"{units.format_duration(record['restore_s'])} / "
                  f"{units.format_duration(record['replacement_s'])}")
    if record["absorbed_causes"]:
        table.add_row("absorbed (elastic)", ", ".join(record["absorbed_causes"]))
    table.add_row("mean outage" + (" (folded)" if record["failures_fold_into_restarts"] else ""),
                  units.format_duration(record["mean_outage_s"]))
    table.add_row("checkpoint blocks for", units.format_duration(record["checkpoint_write_s"]))
    table.add_row("checkpoint interval", _interval_text(record))
    if record.get("persist_interval_s") is not None:
        table.add_row("persisted to storage every", units.format_duration(record["persist_interval_s"]))
    outpaced = record["outpaced"]
    table.add_row("goodput", f"{100 * record['goodput']:.1f} %")
    if "duration_s" in record:
        table.add_row(f"interruptions in {units.format_duration(record['duration_s'])}",
                      f"{record['interruptions_expected']:,.0f} "
                      f"(+{record['planned_interruptions_expected']:,.0f} planned)")
    else:
        table.add_row("time to train, failure-free", units.format_duration(record["time_to_train_failure_free_s"]))
        if not outpaced:
            table.add_row("time to train, with failures", units.format_duration(record["time_to_train_s"]))
            if record.get("bands", {}).get("time_to_train_s"):
                table.add_row("  range", _band(record, "time_to_train_s", units.format_duration).strip(" ()"))
            table.add_row("interruptions expected", f"{record['interruptions_expected']:,.0f}")
    for key in ("p50", "p90", "p99"):
        if key in record:
            table.add_row(f"time to train {key} (Monte Carlo)", units.format_duration(record[key]))
    largest = record["largest_job"]
    if largest["chips"] is None:
        text = f"none (one replica of {largest['chips_per_replica']:,} falls short)"
    else:
        text = ("at least " if largest["at_limit"] else "") + f"{largest['chips']:,} chips"
    table.add_row(f"largest job at >= {100 * largest['target_goodput']:.0f} % goodput", text)
    console.print(table)
    console.print(record["verdict"], highlight=False)
    band_notes(console, record)
    causes = Table(title="unexpected interruptions by cause")
    causes.add_column("cause")
    causes.add_column("per day", justify="right")
    causes.add_column("outage each", justify="right")
    for cause, rate in sorted(record["rates_per_day_by_cause"].items(), key=lambda item: -item[1]):
        outage = units.format_duration(record["outage_s_by_cause"][cause])
        causes.add_row(cause, f"{rate:,.2f}", outage + (" (absorbed)" if cause in record["absorbed_causes"] else ""))
    console.print(causes)


def serve_table(console: Console, record: dict[str, Any]) -> None:
    """``clusterplan serve``: one replica, its latency and throughput, and a demand's fleet."""
    d = record["deployment"]
    layout = ((f"ADP{d['attention_dp']} " if d.get("attention_dp", 1) > 1 else "") + f"TP{d['tp']}"
              + (f" PP{d['pp']}" if d["pp"] > 1 else "") + (f" EP{d['ep']}" if d["ep"] > 1 else ""))
    title = (f"{record['model']} served on {record['chip']} ({record['system']}): {layout}"
             + f", {d['weights']} weights, {d['kv_cache']} KV, "
             f"{record['input_tokens']}/{record['output_tokens']} tokens")
    table = Table(title=title, show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("chips per replica", str(record["chips_per_replica"]))
    stack = record.get("stack")
    if stack:
        budget = "of the HBM" if stack["kv_budget"] == "total" else "of the HBM free after weights"
        table.add_row("engine stack", f"{stack['name']}: KV fraction {d['kv_memory_fraction']:g} {budget}, "
                      f"max batch {d['max_batch']}, {d['frontend']} latency")
    simulation = record.get("simulation")
    if simulation:
        table.add_row("simulated as", ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in simulation.items()
                                                if key != "replicas_per_unit"))
    table.add_row("weights per chip", units.format_bytes(record["weights_bytes_per_chip"]))
    spec = record.get("speculation")
    if spec:
        draft = spec["draft"] or spec["method"]
        table.add_row("speculative decoding", f"{draft}, K={spec['tokens']}, acceptance {spec['acceptance']:g}: "
                      f"{spec['expected_tokens_per_iteration']:.2f} tokens/iteration, draft "
                      f"{units.format_bytes(spec['draft_weight_bytes_per_chip'])}/chip")
    if record.get("prefix_cache"):
        table.add_row("prefix cache", f"{100 * record['prefix_cache']['hit_fraction']:g} % of each prompt cached")
    table.add_row("KV cache per replica", f"{units.format_count(record['kv_capacity_tokens'])} tokens "
                  f"({units.format_bytes(record['kv_bytes_per_token'])}/token)")
    if d.get("attention_dp", 1) > 1:
        table.add_row("KV cache per attention-DP rank",
                      f"{units.format_count(record['kv_capacity_tokens_per_rank'])} tokens")
    if d["ep"] > 1 and "all_to_all_s_per_decode_step" in record["saturated"]:
        table.add_row("expert routing skew (Gini)", f"{d['routing_gini']:g} (--routing-gini)")
    if record["saturated"].get("all_to_all_share_of_decode_step"):
        table.add_row("MoE all-to-all share of a decode step",
                      f"{100 * record['saturated']['all_to_all_share_of_decode_step']:.1f} %")
    single = record["single_request"]
    table.add_row("one request alone: TTFT / TPOT",
                  f"{1000 * single['ttft_s']:.1f} ms / {1000 * single['tpot_s']:.2f} ms")
    sat = record["saturated"]
    table.add_row("saturated throughput (analytic)",
                  f"{sat['output_tokens_per_s']:,.0f} output tok/s ({sat['output_tokens_per_s_per_chip']:,.0f}/chip), "
                  f"batch {sat['batch']:,.0f}")
    for key, label in (("simulated", "simulated at the given rate"), ("replay", "replay"), ("slo", "at the SLO")):
        if key not in record:
            continue
        run = record[key].get("at_max_rate") if key == "slo" else record[key]
        if key == "slo":
            slo = record["slo"]
            table.add_row(f"max rate meeting p99 TTFT {1000 * slo['ttft_p99_s']:.0f} ms, "
                          f"TPOT {1000 * slo['tpot_p99_s']:.0f} ms",
                          f"{slo['max_requests_per_s']:,.2f} req/s ({slo['output_tokens_per_s']:,.0f} output tok/s)")
        if run:
            table.add_row(f"{label}: TTFT p50 / p99",
                          f"{1000 * run['ttft_p50_s']:.1f} ms / {1000 * run['ttft_p99_s']:.1f} ms")
            table.add_row(f"{label}: TPOT p50 / p99",
                          f"{1000 * run['tpot_p50_s']:.2f} ms / {1000 * run['tpot_p99_s']:.2f} ms")
            table.add_row(f"{label}: output tok/s, mean batch",
                          f"{run['output_tokens_per_s']:,.0f}, {run['mean_batch']:,.1f}")
            if "goodput_requests_per_s" in run:
                kv = run["kv_utilisation"]
                table.add_row(f"{label}: goodput (SLO met)",
                              f"{run['goodput_requests_per_s']:,.2f} req/s ({100 * run['slo_attainment']:.0f} % of "
                              f"requests)")
                table.add_row(f"{label}: KV use mean / peak, preemptions",
                              f"{100 * kv['mean']:.0f} % / {100 * kv['peak']:.0f} %, {run['preemptions']:,}")
    demand = record.get("demand")
    if demand:
        table.add_row("demand", f"{units.format_count(demand['output_tokens_per_s'])} output tok/s")
        table.add_row("replicas / chips", f"{demand['replicas']:,} / {demand['chips']:,} "
                      f"({100 * demand['utilisation']:.0f} % of their capacity used)")
        if record.get("bands", {}).get("demand.chips"):
            table.add_row("chips, range", _band(record, "demand.chips", lambda v: f"{v:,.0f}").strip(" ()"))
        power = demand["power_w"]
        table.add_row("power (IT / facility)", f"{power['it_w'] / 1e6:,.2f} MW / {power['facility_w'] / 1e6:,.2f} MW "
                      f"at {100 * demand['activity']:.0f} % activity")
        if "usd_per_million_output_tokens" in demand:
            table.add_row("cost (TCO)", f"${demand['cost_per_hour_usd']:,.0f}/hour; "
                          f"${demand['usd_per_million_output_tokens']:.3f} per M output tokens "
                          f"(${demand['usd_per_million_total_tokens']:.3f} per M input+output)")
            if record.get("bands", {}).get("demand.usd_per_million_output_tokens"):
                table.add_row("$ per M output tokens, range",
                              _band(record, "demand.usd_per_million_output_tokens", lambda v: f"${v:.3f}").strip(" ()"))
        else:
            table.add_row("cost", demand["cost_note"])
    console.print(table)
    band_notes(console, record)


def capacity_table(console: Console, record: dict[str, Any]) -> None:
    """``clusterplan capacity``: the deployments that serve a demand best, ranked."""
    slo = record["slo"]
    title = (f"{record['model']} on {record['chip']} ({record['system']}): "
             f"{units.format_count(record['demand_output_tokens_per_s'])} output tok/s at p99 TTFT "
             f"{1000 * slo['ttft_p99_s']:g} ms / TPOT {1000 * slo['tpot_p99_s']:g} ms, "
             f"{record['input_tokens']}/{record['output_tokens']} tokens; best by {record['objective']}")
    table = Table(title=title)
    for column in ("#", "deployment (weights/KV)", "chips per replica", "req/s per replica", "replicas", "chips",
                   "facility MW", "$ per M output tokens"):
        table.add_column(column, justify="left" if column.startswith("deployment") else "right")
    for rank, row in enumerate(record["ranked"], start=1):
        usd = row.get("usd_per_million_output_tokens")
        table.add_row(str(rank), row["label"], str(row["chips_per_replica"]),
                      f"{row['requests_per_s_per_replica']:,.2f}", f"{row['replicas']:,}", f"{row['chips']:,}",
                      f"{row['power_w']['facility_w'] / 1e6:,.2f}", f"{usd:.3f}" if usd is not None else "n/a")
    console.print(table)
    settings = []
    spec = record.get("speculation")
    if spec:
        settings.append(f"speculative decoding {spec['draft'] or spec['method']}, K={spec['tokens']}, "
                        f"acceptance {spec['acceptance']:g}")
    if record.get("prefix_cache_hit"):
        settings.append(f"{100 * record['prefix_cache_hit']:g} % of each prompt in the prefix cache")
    if record.get("stack"):
        settings.append(f"the {record['stack']} engine stack's defaults")
    if settings:
        console.print("every deployment with " + "; ".join(settings), highlight=False)
    rejected = ", ".join(f"{count} {reason}" for reason, count in sorted(record["rejected"].items()))
    console.print(f"{record['candidates']} deployments considered, {record['simulated']} simulated at the SLO "
                  "(the rest bounded out by their saturated throughput)"
                  + (f"; rejected: {rejected}" if rejected else ""))
    if record.get("bands", {}).get("best.chips"):
        console.print("best deployment, range: "
                      + _band(record, "best.chips", lambda v: f"{v:,.0f}").strip(" ()") + " chips, "
                      + _band(record, "best.usd_per_million_output_tokens", lambda v: f"${v:.3f}").strip(" ()")
                      + " per M output tokens", highlight=False)
    band_notes(console, record)


def _owned_vs_rented(record: dict[str, Any]) -> tuple[str, str]:
    """Owned TCO (with its cost of capital) beside the public cloud price of the same chip."""
    hourly = record.get("cost_per_chip_hour_breakdown_usd", {})
    owned = (f"owned ${record['cost_per_chip_hour_usd']:.2f} (incl. ${hourly['cost_of_capital_usd']:.2f} cost of "
             f"capital at {100 * hourly['wacc']:.0f} % WACC; ${hourly['total_without_cost_of_capital_usd']:.2f} "
             "straight-line)" if "cost_of_capital_usd" in hourly else f"owned ${record['cost_per_chip_hour_usd']:.2f}")
    prices = record.get("rented_prices") or []
    rented = ("; rented " + ", ".join(f"${p['usd_per_chip_hour']:.2f} {p['basis']} "
                                      f"({p['instance'].split(',')[0].split(' (')[0]})"
                                      for p in prices)) if prices else "; rented: no public cloud price"
    return "owned vs rented per chip-hour", owned + rented
