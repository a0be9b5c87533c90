"""Server-rendered pages of the web planner. Each page's state is its URL query string (a
shared link shows the same answer); a bad input shows the one-line refusal next to the form."""

from __future__ import annotations

import html
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from clusterplan import units
from clusterplan.api.capacity import CapacityAnswer
from clusterplan.api.reliability import ReliabilityAnswer
from clusterplan.api.search import SearchAnswer
from clusterplan.catalog import model_names, system_names
from clusterplan.errors import SpecError
from clusterplan.web.api import ask

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px}nav a{margin-right:1em}
form{display:flex;flex-wrap:wrap;gap:.6em;align-items:end;margin:1em 0}label{display:flex;flex-direction:column;
font-size:.85em}input,select{padding:.2em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;
padding:.2em .5em;text-align:right}td:first-child,th:first-child{text-align:left}.refusal{color:#b00;
font-weight:bold}.side{display:flex;gap:2em;flex-wrap:wrap}code.cmd{display:block;white-space:pre-wrap;
background:#f4f4f4;padding:.5em}label .refusal{font-size:.95em;max-width:28em}
.column{flex:1 1 480px;min-width:0}fieldset{border:1px solid #ccc;margin:.4em 0;display:flex;
flex-wrap:wrap;gap:.6em;align-items:end}form>.side{flex:1 1 100%;gap:1em}
.busy{color:#555}.busy::before{content:'';display:inline-block;width:.9em;height:.9em;margin-right:.5em;
border:2px solid #999;border-top-color:transparent;border-radius:50%;animation:spin 1s linear infinite;
vertical-align:middle}@keyframes spin{to{transform:rotate(360deg)}}.downloads a{margin-right:.8em}"""


def layout(title: str, body: str, scripts: str = "") -> str:
    """A whole page: navigation, ``body``, and ``scripts`` (plotly.js served by this server)."""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>clusterplan: {html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><nav><a href='/'>clusterplan</a><a href='/train'>Training</a>"
            f"<a href='/serve'>Serving</a><a href='/failures'>Failures</a><a href='/fleet'>Fleet</a>"
            f"<a href='/rainier'>Rainier</a><a href='/docs'>API</a></nav>"
            f"<h1>{html.escape(title)}</h1>{body}{scripts}</body></html>")


def index_page() -> str:
    return layout("Planner", "<ul><li><a href='/train'>Training</a>: the best parallel plans of a job</li>"
                  "<li><a href='/serve'>Serving</a>: deployments for a demand at a latency SLO</li>"
                  "<li><a href='/failures'>Failures</a>: goodput and the checkpoint interval</li>"
                  "<li><a href='/fleet'>Fleet</a>: a fleet scenario quarter by quarter, two side by side</li>"
                  "<li><a href='/rainier'>Rainier</a>: the Project Rainier report, what-ifs side by side</li>"
                  "<li><a href='/docs'>API</a>: the JSON endpoints under /api/</li></ul>")


#: The label of a select's empty option: the scenario's own value.
DEFAULT_OPTION = "(scenario's)"


def _field(name: str, label: str, value: str, options: list[str] | None = None, slider: str = "",
           placeholder: str = "") -> str:
    """One labelled form control (``data-field``: where a refusal of it is shown). ``slider``:
    ``min,max,step`` makes it a range input (a what-if slider) showing its value."""
    if options is not None:
        choices = "".join(f"<option value='{html.escape(o, quote=True)}'{' selected' if o == value else ''}>"
                          f"{html.escape(o or DEFAULT_OPTION)}</option>" for o in options)
        return f"<label data-field='{name}'>{label}<select name='{name}'>{choices}</select></label>"
    if slider:
        low, high, step = slider.split(",")
        return (f"<label data-field='{name}'>{label} <output>{html.escape(value)}</output><input type='range' "
                f"name='{name}' min='{low}' max='{high}' step='{step}' value='{html.escape(value, quote=True)}' "
                "oninput='this.previousElementSibling.value=this.value'></label>")
    hint = f" placeholder='{html.escape(placeholder, quote=True)}'" if placeholder else ""
    return (f"<label data-field='{name}'>{label}<input name='{name}' "
            f"value='{html.escape(value, quote=True)}'{hint}></label>")


def _form(fields: str, action: str) -> str:
    return f"<form method='get' action='{action}'>{fields}<button type='submit'>plan</button></form>"


def _refusal(error: SpecError) -> str:
    return f"<p class='refusal' role='alert'>error: {html.escape(str(error))}</p>"


#: Request field names whose form field is spelled otherwise.
FORM_NAMES = {"seq_len": "seq", "demand_output_tokens_per_s": "demand", "slo_ttft_s": "slo_ttft",
              "slo_tpot_s": "slo_tpot", "system": "systems", "fleet": "scenario"}


def refused_field(error: SpecError, names: Iterable[str], prefix: str = "") -> str | None:
    """The form field (among ``names``) a refusal is about: ``--chips`` -> ``chips``,
    ``scenario.serving.demand`` -> ``demand``, with the column's ``prefix`` (``b_``)."""
    names = list(names)
    key = str(error.field).lstrip("-").replace("-", "_").split(".")[-1].split("[")[0]
    for candidate in (key, FORM_NAMES.get(key, key)):
        if prefix + candidate in names:
            return prefix + candidate
    return None


def refusal_span(error: SpecError) -> str:
    return f"<span class='refusal' role='alert'>error: {html.escape(str(error))}</span>"


def with_refusal(form: str, error: SpecError, prefix: str = "") -> str:
    """``form`` with the one-line refusal next to the field it is about (under the form when it
    is about none of its fields)."""
    names = re.findall(r"<label data-field='([^']+)'>", form)
    name = refused_field(error, names, prefix)
    if name is None:
        return form + _refusal(error)
    start = form.index(f"<label data-field='{name}'>")
    end = form.index("</label>", start)
    return form[:end] + refusal_span(error) + form[end:]


def _values(query: Mapping[str, str], defaults: dict[str, str]) -> dict[str, str]:
    return {key: query.get(key, default) for key, default in defaults.items()}


def _table(header: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table{f' id={table_id!r}' if table_id else ''}><tr>{head}</tr>{body}</table>"


def _plan_label(plan: dict[str, Any]) -> str:
    parts = [f"{name.upper()}{plan[name]}" for name in ("tp", "pp", "vp", "cp", "dp", "ep")
             if name in ("tp", "pp", "dp") or plan.get(name, 1) > 1]
    return " ".join([*parts, f"mb{plan['micro_batch']}", plan["recompute"], f"Z{plan['zero']}", plan["precision"]])


TRAIN_DEFAULTS = {"model": "llama3-70b", "system": "dgx-h100", "chips": "1024", "seq": "8192",
                  "global_batch": "512", "top": "10", "up_to": "on", "plan": "0"}


def _range(record: Mapping[str, Any], field: str, fmt: str, scale: float = 1.0) -> str:
    """`` (low-high)`` of a banded figure of ``record`` (its ``bands``), empty without a band."""
    band = (record.get("bands") or {}).get(field)
    if not band:
        return ""
    low, high = (scale * float(v) for v in band)
    return f" ({low:{fmt}}-{high:{fmt}})"


def _trust(record: Mapping[str, Any]) -> str:
    """Where an answer's ranges come from and every reason it is outside validated ground (the
    record's ``band_basis``, ``band_coverage`` and ``extrapolation``), as the CLI prints them."""
    parts = []
    if record.get("band_basis"):
        coverage = 100 * float(record.get("band_coverage") or 0.0)
        parts.append(f"<p class='band-basis'><small>Ranges hold {coverage:.0f} % of the runs of publications left "
                     f"out of the fit; drawn from {html.escape(str(record['band_basis']))}.</small></p>")
    flags = record.get("extrapolation") or []
    if flags:
        items = "".join(f"<li>{html.escape(str(flag))}</li>" for flag in flags)
        parts.append(f"<details class='extrapolation'><summary>{len(flags)} extrapolation flag(s)</summary>"
                     f"<ul>{items}</ul></details>")
    return "".join(parts)


def training_page(query: Mapping[str, str]) -> str:
    """The Training page: the search's ranked plans, a chart of step time vs chips (colour: cost
    per step), and the chosen plan's step-time and memory breakdowns and its train command."""
    values = _values(query, TRAIN_DEFAULTS)
    form = _form("".join([
        _field("model", "model", values["model"], model_names()),
        _field("system", "system", values["system"], system_names()),
        _field("chips", "chips", values["chips"]), _field("seq", "seq (tokens)", values["seq"]),
        _field("global_batch", "global batch (sequences)", values["global_batch"]),
        _field("top", "plans listed", values["top"]),
        _field("up_to", "chips", values["up_to"], ["on", "off"]),
        f"<input type='hidden' name='plan' value='{html.escape(values['plan'], quote=True)}'>"]), "/train")
    try:
        answer = ask("search", {"model": values["model"], "system": values["system"], "chips": values["chips"],
                                "seq": values["seq"], "global_batch": values["global_batch"], "top": values["top"],
                                "up_to": values["up_to"] == "on"})
        assert isinstance(answer, SearchAnswer)
    except SpecError as error:
        return layout("Training", with_refusal(form, error))
    best = answer.record["best"]
    try:
        chosen = max(0, min(int(values["plan"]), len(best) - 1))
    except ValueError:
        return layout("Training", form + _refusal(SpecError("plan", values["plan"], "must be a plan's rank")))
    rows = []
    for rank, record in enumerate(best):
        link = {**values, "plan": str(rank)}
        href = "/train?" + "&amp;".join(f"{k}={html.escape(str(v), quote=True)}" for k, v in link.items())
        rows.append([f"<a href='{href}'>{rank + 1}</a>", html.escape(_plan_label(record["plan"])),
                     f"{record['chips']:,}", f"{record['step_time_s']:.3f}{_range(record, 'step_time_s', '.3f')}",
                     f"{100 * record['mfu']:.1f} %{_range(record, 'mfu', '.0f', 100.0)}",
                     f"{record['memory_bytes_per_chip'] / 2**30:.1f}",
                     f"{record['chips'] * record['step_time_s'] / 3600 * record['cost_per_chip_hour_usd']:.2f}",
                     html.escape(record.get("why_not_best", "") or "best")])
    table = _table(["#", "plan", "chips", "step s (range)", "MFU (range)", "memory GiB", "$ per step",
                    "why not best"], rows, "plans")
    costs = [r["chips"] * r["step_time_s"] / 3600 * r["cost_per_chip_hour_usd"] for r in best]
    chart = {
        "data": [{"type": "scatter", "mode": "markers",
                  "x": [r["chips"] for r in best], "y": [r["step_time_s"] for r in best],
                  "text": [_plan_label(r["plan"]) for r in best],
                  "marker": {"size": 12, "color": costs, "colorscale": "Viridis", "showscale": True,
                             "colorbar": {"title": {"text": "$ per step"}}}}],
        "layout": {"title": {"text": "ranked plans: step time vs chips (colour: cost per step)"},
                   "xaxis": {"title": {"text": "chips"}}, "yaxis": {"title": {"text": "step time (s)"}},
                   "height": 420},
    }
    plan = best[chosen]
    time_rows = [[html.escape(k), f"{1000 * v:.2f}", f"{100 * v / plan['step_time_s']:.1f} %"]
                 for k, v in plan["time_breakdown_s"].items() if v]
    memory_rows = [[html.escape(k), f"{v / 2**30:.3f}"] for k, v in plan["memory_breakdown"].items()]
    command = plan.get("command") or ""
    if isinstance(command, list):
        command = shlex.join(command)
    detail = (f"<h2>plan {chosen + 1}: {html.escape(_plan_label(plan['plan']))} on {plan['chips']:,} chips</h2>"
              f"<div class='side'><div><h3>step time</h3>{_table(['component', 'ms', 'share'], time_rows, 'time')}"
              f"</div><div><h3>memory per chip</h3>{_table(['component', 'GiB'], memory_rows, 'memory')}</div></div>"
              f"{_trust(plan)}<h3>reproduce</h3><code class='cmd' id='command'>{html.escape(str(command))}</code>")
    summary = (f"<p>{answer.plans_enumerated:,} plans enumerated, {answer.plans_fitting:,} fit in memory, "
               f"searched in {answer.search_time_s:.2f} s.</p>")
    script = (f"<script src='/static/plotly.min.js'></script><script>Plotly.newPlot('chart', "
              f"{json.dumps(chart['data'])}, {json.dumps(chart['layout'])}, {{displaylogo: false}});</script>")
    return layout("Training", form + summary + table + "<div id='chart' class='chart'></div>" + detail, script)


SERVE_DEFAULTS = {"model": "llama3-70b", "systems": "trn2,dgx-h100,dgx-b200", "demand": "1M", "slo_ttft": "2s",
                  "slo_tpot": "100ms", "input_tokens": "1000", "output_tokens": "200", "objective": "cost"}


def _facility_mw(item: dict[str, Any]) -> float | None:
    power = item.get("power_w")
    return power.get("facility_w", 0.0) / 1e6 if isinstance(power, dict) else None


def serving_page(query: Mapping[str, str]) -> str:
    """The Serving page: capacity's best deployment of each system in one table ($/M tokens,
    chips, facility MW) with a chart, then each system's ranked deployments side by side."""
    values = _values(query, SERVE_DEFAULTS)
    form = _form("".join([
        _field("model", "model", values["model"], model_names()),
        _field("systems", "systems (comma-separated, up to 4)", values["systems"]),
        _field("demand", "demand (output tokens/s)", values["demand"]),
        _field("slo_ttft", "p99 TTFT", values["slo_ttft"]), _field("slo_tpot", "p99 TPOT", values["slo_tpot"]),
        _field("input_tokens", "input tokens", values["input_tokens"]),
        _field("output_tokens", "output tokens", values["output_tokens"]),
        _field("objective", "objective", values["objective"], ["cost", "chips", "power"])]), "/serve")
    systems = [name.strip() for name in values["systems"].split(",") if name.strip()]
    columns = []
    best_rows: list[list[str]] = []
    chart_x: list[str] = []
    chart_cost: list[float | None] = []
    chart_mw: list[float | None] = []
    try:
        if not systems:
            raise SpecError("systems", values["systems"], "must name at least one catalog system")
        if len(systems) > 4:
            raise SpecError("systems", values["systems"], "must name at most 4 systems")
        for system in systems:
            answer = ask("capacity", {"model": values["model"], "system": system, "demand": values["demand"],
                                      "slo_ttft": values["slo_ttft"], "slo_tpot": values["slo_tpot"],
                                      "input_tokens": values["input_tokens"], "output_tokens": values["output_tokens"],
                                      "objective": values["objective"], "top": 3, "requests": 300})
            assert isinstance(answer, CapacityAnswer)
            rows = []
            for item in answer.record["ranked"]:
                cost = item.get("usd_per_million_output_tokens")
                mw = _facility_mw(item)
                rows.append([html.escape(item["label"]), f"{item.get('replicas', 0):,}", f"{item.get('chips', 0):,}",
                             f"{mw:.2f}" if mw is not None else "-", f"{cost:.3f}" if cost is not None else "-"])
            ranked = answer.record["ranked"]
            if ranked:
                best = ranked[0]
                cost = best.get("usd_per_million_output_tokens")
                mw = _facility_mw(best)
                best_rows.append([html.escape(system), html.escape(answer.chip), html.escape(best["label"]),
                                  f"{best.get('chips', 0):,}{_range(answer.record, 'best.chips', ',.0f')}",
                                  f"{mw:.2f}{_range(answer.record, 'best.power_w.facility_w', '.2f', 1e-6)}"
                                  if mw is not None else "-",
                                  f"{cost:.3f}{_range(answer.record, 'best.usd_per_million_output_tokens', '.3f')}"
                                  if cost is not None else "-"])
                chart_x.append(system)
                chart_cost.append(cost)
                chart_mw.append(mw)
            columns.append(f"<div><h2>{html.escape(system)} ({html.escape(answer.chip)})</h2>"
                           + _table(["deployment", "replicas", "chips", "facility MW", "$/M tokens"], rows)
                           + _trust(answer.record) + "</div>")
    except SpecError as error:
        return layout("Serving", with_refusal(form, error))
    compare = ("<h2>best deployment per system</h2>"
               + _table(["system", "chip", "deployment", "chips (range)", "facility MW (range)",
                         "$/M output tokens (range)"], best_rows, "compare"))
    chart = {"data": [{"type": "bar", "name": "$/M output tokens", "x": chart_x, "y": chart_cost, "offsetgroup": 1},
                      {"type": "bar", "name": "facility MW", "x": chart_x, "y": chart_mw, "yaxis": "y2",
                       "offsetgroup": 2}],
             "layout": {"title": {"text": f"{values['model']} at {values['demand']} output tokens/s"},
                        "barmode": "group", "height": 380, "legend": {"orientation": "h"},
                        "yaxis": {"title": {"text": "$ per M output tokens"}},
                        "yaxis2": {"title": {"text": "facility MW"}, "overlaying": "y", "side": "right"}}}
    script = (f"<script src='/static/plotly.min.js'></script><script>Plotly.newPlot('chart', "
              f"{json.dumps(chart['data'])}, {json.dumps(chart['layout'])}, {{displaylogo: false}});</script>")
    return layout("Serving", form + compare + "<div id='chart' class='chart'></div>"
                  + f"<div class='side'>{''.join(columns)}</div>", script)


FAILURE_DEFAULTS = {"model": "llama3-70b", "system": "dgx-h100", "chips": "1024", "tp": "8", "pp": "4",
                    "tokens": "15T", "recovery": "spares", "checkpoint": "sync"}


def failures_page(query: Mapping[str, str]) -> str:
    """The Failures page: a job's goodput, failure rate and checkpoint interval."""
    values = _values(query, FAILURE_DEFAULTS)
    form = _form("".join([
        _field("model", "model", values["model"], model_names()),
        _field("system", "system", values["system"], system_names()),
        _field("chips", "chips", values["chips"]), _field("tp", "TP", values["tp"]), _field("pp", "PP", values["pp"]),
        _field("tokens", "tokens", values["tokens"]),
        _field("recovery", "recovery", values["recovery"], ["spares", "wait", "elastic"]),
        _field("checkpoint", "checkpoint", values["checkpoint"], ["sync", "async", "memory"])]), "/failures")
    try:
        answer = ask("reliability", values)
        assert isinstance(answer, ReliabilityAnswer)
    except SpecError as error:
        return layout("Failures", with_refusal(form, error))
    record = answer.record
    rows = [["goodput", f"{100 * answer.goodput:.1f} %"],
            ["checkpoint interval", units.format_duration(answer.checkpoint_interval_s)],
            ["mean time between interruptions", units.format_duration(answer.mtbf_s)],
            ["interruptions per day", f"{answer.interruptions_per_day:.2f}"]]
    if record.get("time_to_train_s") is not None:
        band = (record.get("bands") or {}).get("time_to_train_s")
        span = (f" ({units.format_duration(band[0])} to {units.format_duration(band[1])})" if band else "")
        rows.append(["time to train (with failures)", units.format_duration(record["time_to_train_s"]) + span])
    causes = record.get("rates_per_day_by_cause") or {}
    chart = {"data": [{"type": "bar", "x": list(causes), "y": list(causes.values()), "name": "interruptions per day"}],
             "layout": {"title": {"text": "interruptions per day by cause"}, "height": 360,
                        "yaxis": {"title": {"text": "per day"}, "rangemode": "tozero"}}}
    script = (f"<script src='/static/plotly.min.js'></script><script>Plotly.newPlot('chart', "
              f"{json.dumps(chart['data'])}, {json.dumps(chart['layout'])}, {{displaylogo: false}});</script>")
    return layout("Failures", form + _table(["", ""], rows, "goodput") + _trust(record)
                  + "<div id='chart' class='chart'></div>", script)
