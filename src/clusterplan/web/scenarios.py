"""The Fleet and Rainier pages: a scenario as a form with what-if sliders, two scenarios side by
side (columns A and B, both in the URL: B's fields are prefixed ``b_``), Plotly charts, and the
answer's downloads (JSON: what ``/api/<kind>`` answers; CSV; the HTML report). A change to the
form updates the results in place (debounced); Rainier's answer streams its progress."""

from __future__ import annotations

import csv
import html
import io
import json
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlencode

from clusterplan import units
from clusterplan.api._base import Answer
from clusterplan.catalog import load_scenario, scenario_names
from clusterplan.errors import SpecError
from clusterplan.web.api import QUESTIONS, build_request
from clusterplan.web.pages import _field, _table, layout, refused_field, with_refusal

#: Form field: name, label, select options (None: a text input), slider ``min,max,step``, hint.
FieldSpec = tuple[str, str, list[str] | None, str, str]


@cache
def rainier_scenarios() -> list[str]:
    """Built-in scenarios the Rainier report takes (a ``system`` and ``chips`` of their own)."""
    return [name for name in scenario_names() if {"system", "chips"} <= set(load_scenario(name))]


@dataclass(frozen=True)
class ScenarioPage:
    """One scenario page: its question (``fleet`` or ``rainier``), form and columns' defaults."""

    kind: str
    title: str
    fields: Callable[[], list[FieldSpec]]
    a: dict[str, str]
    b: dict[str, str]
    compare: str
    stream: bool = False
    intro: str = ""


def _fleet_fields() -> list[FieldSpec]:
    return [("scenario", "scenario", scenario_names(), "", ""),
            ("runs", "search the reference run", ["false", "true"], "", ""),
            ("capex_scale", "capex x", None, "0.25,3,0.05", ""),
            ("ai_share", "AI share of capex", None, "", "scenario's"),
            ("power_envelope_w", "power cap (facility)", None, "", "e.g. 2.2GW"),
            ("capex_to_online_quarters", "quarters to online", ["", *map(str, range(9))], "", "")]


def _rainier_fields() -> list[FieldSpec]:
    return [("scenario", "scenario", rainier_scenarios(), "", ""),
            ("chips", "chips", None, "", "500000"),
            ("growth", "growth stages (chips)", None, "", "500k,1M"),
            ("tokens", "training tokens", None, "", "15T"),
            ("demand", "serving demand (tokens/s)", None, "", "10M"),
            ("slo_ttft", "p99 TTFT", None, "", "3s"),
            ("slo_tpot", "p99 TPOT", None, "", "60ms"),
            ("recovery", "recovery", ["", "spares", "wait", "elastic"], "", ""),
            ("checkpoint", "checkpoint", ["", "sync", "async", "memory"], "", ""),
            ("failure_scale", "failure rates x", None, "0.25,4,0.25", ""),
            ("frontier_runs", "frontier runs", ["true", "false"], "", ""),
            ("serving", "serving search", ["true", "false"], "", "")]


FLEET = ScenarioPage(
    kind="fleet", title="Fleet", fields=_fleet_fields,
    a={"scenario": "amazon-2025", "runs": "false", "capex_scale": "1", "ai_share": "", "power_envelope_w": "",
       "capex_to_online_quarters": ""},
    b={"scenario": "amazon-2026", "runs": "false", "capex_scale": "1", "ai_share": "", "power_envelope_w": "",
       "capex_to_online_quarters": ""},
    compare="on",
    intro="A fleet scenario quarter by quarter (chips online, facility power, capex), with what-ifs; "
          "B beside A. An empty field keeps the scenario's value.")
RAINIER = ScenarioPage(
    kind="rainier", title="Rainier", fields=_rainier_fields,
    a={"scenario": "rainier", "chips": "", "growth": "", "tokens": "", "demand": "", "slo_ttft": "", "slo_tpot": "",
       "recovery": "", "checkpoint": "", "failure_scale": "1", "frontier_runs": "true", "serving": "true"},
    b={"scenario": "rainier", "chips": "", "growth": "", "tokens": "", "demand": "", "slo_ttft": "", "slo_tpot": "",
       "recovery": "wait", "checkpoint": "sync", "failure_scale": "2", "frontier_runs": "true",
       "serving": "true"},
    compare="off", stream=True,
    intro="The Project Rainier report (cluster totals, the training plan, failures, serving, the fleet ramp) "
          "with what-ifs; B beside A. An empty field keeps the scenario's value. The whole scenario takes "
          "15 s to minutes (plan and serving searches); fewer chips and tokens, frontier runs and serving off "
          "make it seconds.")
PAGES = {"fleet": FLEET, "rainier": RAINIER}


# ---- state: the URL's query -> each column's form values and API parameters -------------------
def side_values(page: ScenarioPage, query: Mapping[str, str], side: str) -> dict[str, str]:
    """The form values of column ``side`` (``a`` or ``b``: B's names are prefixed ``b_``)."""
    prefix, defaults = ("", page.a) if side == "a" else ("b_", page.b)
    return {name: query.get(prefix + name, default) for name, default in defaults.items()}


def api_params(values: Mapping[str, str]) -> dict[str, str]:
    """The ``/api/<kind>`` query of a column: its non-empty values."""
    return {name: value for name, value in values.items() if value != ""}


def comparing(page: ScenarioPage, query: Mapping[str, str]) -> bool:
    return query.get("compare", page.compare) == "on"


# ---- answers, kept for the downloads and the next update ----------------------------------------
_ANSWERS: OrderedDict[tuple[str, tuple[tuple[str, str], ...]], Answer] = OrderedDict()
_LOCK = threading.Lock()
#: One answer of each kind computed at a time (the searches use every core; a second request for
#: the same answer waits for the first rather than computing it again).
_COMPUTE = {kind: threading.Lock() for kind in QUESTIONS}


def answer(kind: str, params: Mapping[str, str], progress: Callable[[str], None] | None = None) -> Answer:
    """The API's answer for ``params`` (SpecError on bad input), remembered for the last few."""
    request = build_request(kind, params)  # refuses bad input at once, before any waiting
    key = (kind, tuple(sorted((str(k), str(v)) for k, v in params.items())))
    with _LOCK:
        if key in _ANSWERS:
            _ANSWERS.move_to_end(key)
            return _ANSWERS[key]
    with _COMPUTE[kind]:
        with _LOCK:
            if key in _ANSWERS:
                return _ANSWERS[key]
        question = QUESTIONS[kind].answer
        result = question(request, progress=progress) if progress is not None else question(request)
    with _LOCK:
        _ANSWERS[key] = result
        while len(_ANSWERS) > 16:
            _ANSWERS.popitem(last=False)
    return result


# ---- rendering -------------------------------------------------------------------------------
def _chart(chart_id: str, data: list[dict[str, Any]], layout_: dict[str, Any]) -> str:
    figure = html.escape(json.dumps({"data": data, "layout": {"height": 360, **layout_}}), quote=True)
    return f"<div class='chart' id='{chart_id}' data-figure='{figure}'></div>"


def _downloads(kind: str, params: Mapping[str, str], side: str) -> str:
    query = html.escape(urlencode(params), quote=True)
    links = "".join(f"<a id='download-{side}-{ext}' href='/{kind}/download.{ext}?{query}' download>{label}</a>"
                    for ext, label in (("json", "JSON"), ("csv", "CSV"), ("html", "HTML report")))
    return f"<p class='downloads'>download: {links}</p>"


def _what_ifs(record: dict[str, Any]) -> str:
    given = record.get("overrides") or {}
    if not given:
        return "<p>as the scenario file has it</p>"

    def text(value: Any) -> str:
        if (isinstance(value, float) and not value.is_integer()) or isinstance(value, bool):
            return str(value)
        if isinstance(value, int | float) and abs(value) >= 1e4:
            return units.format_count(value)
        if isinstance(value, list):
            return ",".join(text(item) for item in value)
        return str(value) if not isinstance(value, float) else f"{value:g}"

    return "<p>what-if: " + html.escape(", ".join(f"{k} = {text(v)}" for k, v in given.items())) + "</p>"


def fleet_column(record: dict[str, Any], side: str) -> str:
    quarters = record["quarters"]
    companies = list(dict.fromkeys(q["company"] for q in quarters))
    labels = sorted({q["quarter"] for q in quarters})
    ends = []
    for company in companies:
        end = [q for q in quarters if q["company"] == company][-1]
        ends.append([html.escape(company), end["quarter"], f"{end['chips']:,}", f"{end['facility_mw']:,.0f}",
                     f"{end['peak_bf16_eflops']:,.0f}", f"{end['capex_usd_cumulative'] / 1e9:,.1f}"])
    rows = []
    for q in quarters:
        run = q.get("reference_run")
        run_text = "-" if not run else (f"{run['days_to_train']:.0f} d on {run['chips']:,}" if run.get("possible")
                                         else "does not fit")
        rows.append([html.escape(q["company"]), q["quarter"], f"{q['chips']:,}", f"{q.get('chips_ordered', 0):,}",
                     f"{q['facility_mw']:,.0f}", f"{q['peak_bf16_eflops']:,.0f}",
                     f"{q['capex_usd_cumulative'] / 1e9:,.1f}", run_text])

    def series(key: str, scale: float) -> list[dict[str, Any]]:
        return [{"type": "scatter", "mode": "lines+markers", "name": company, "x": labels,
                 "y": [next((q[key] / scale for q in quarters if q["company"] == company and q["quarter"] == label),
                            None) for label in labels]} for company in companies]

    charts = (_chart(f"chart-{side}-chips", series("chips", 1e3),
                     {"title": {"text": "chips online (thousands)"}, "yaxis": {"rangemode": "tozero"}})
              + _chart(f"chart-{side}-power", series("facility_mw", 1.0),
                       {"title": {"text": "facility power (MW)"}, "yaxis": {"rangemode": "tozero"}}))
    backtest = ""
    items = [[html.escape(f"{test.get('company', '')} {test.get('year', '')}: {figure['figure']}"),
              f"{figure['modelled']:,.4g}", f"{figure['reported']:,.4g}",
              f"{100 * figure['error']:+.1f} %" if figure.get("error") is not None else "-"]
             for test in record.get("backtest") or [] for figure in test.get("figures", [])
             if isinstance(figure.get("modelled"), int | float) and isinstance(figure.get("reported"), int | float)]
    if items:
        backtest = "<h3>backtest</h3>" + _table(["figure", "modelled", "reported", "error"], items, f"backtest-{side}")
    return ("<h3>end of the timeline</h3>"
            + _table(["company", "quarter", "chips", "facility MW", "bf16 EFLOP/s", "AI capex $B (cum.)"], ends,
                     f"headline-{side}")
            + charts + "<h3>timeline</h3>"
            + _table(["company", "quarter", "chips online", "ordered", "facility MW", "bf16 EFLOP/s",
                      "AI capex $B (cum.)", "reference run"], rows, f"timeline-{side}") + backtest)


def _days(seconds: Any) -> str:
    return f"{seconds / 86400:,.1f} days" if isinstance(seconds, int | float) else "-"


def rainier_column(record: dict[str, Any], side: str) -> str:
    rows = [["system", f"{html.escape(record['system'])} ({html.escape(record['chip'])})"],
            ["chips", f"{record['chips']:,}"], ["facility power", f"{record['facility_mw']:,.0f} MW"],
            ["dense bf16 peak", f"{record['peak_bf16_eflops']:,.1f} EFLOP/s"]]
    if "capex_usd" in record:
        rows.append(["capex (model)", f"${record['capex_usd'] / 1e9:,.1f} B"])
    training = record.get("training")
    if training:
        failures = training.get("reliability") or {}
        rows += [["training plan", html.escape(f"{training['model']} on {training['chips']:,} chips, "
                                               f"MFU {100 * training['mfu']:.0f} %")],
                 ["step time", f"{training['step_time_s']:.2f} s"],
                 ["time to train, no failures", _days(training.get("time_to_train_s"))],
                 ["goodput (scenario recovery)", f"{100 * failures.get('goodput', 0):.1f} %"],
                 ["time to train, with failures", _days(failures.get("time_to_train_s"))]]
        if "cost_with_failures_usd" in training:
            rows.append(["cost with failures", f"${training['cost_with_failures_usd'] / 1e6:,.1f} M"])
    serving = record.get("serving")
    if serving:
        best = serving["best"]
        rows += [["serving", html.escape(f"{serving['model']}, {best['label']}")],
                 ["serving $/M output tokens", f"{best['usd_per_million_output_tokens']:.3f}"],
                 ["chips for the demand", f"{best['chips']:,} ({100 * serving['demand_share_of_campus']:.1f} %)"]]
    charts = ""
    failures_rows = record.get("reliability") or []
    if failures_rows:
        profiles = list(dict.fromkeys(row["profile"] for row in failures_rows))
        stages = list(dict.fromkeys(str(row["stage"]) for row in failures_rows))
        data = [{"type": "bar", "name": profile, "x": stages,
                 "y": [next((100 * row["goodput"] for row in failures_rows
                             if row["profile"] == profile and str(row["stage"]) == stage), None) for stage in stages]}
                for profile in profiles]
        charts += _chart(f"chart-{side}-goodput", data, {"title": {"text": "goodput of a 30-day job on the stage (%)"},
                                                        "barmode": "group", "yaxis": {"range": [0, 100]}})
    fleet = record.get("fleet") or []
    if fleet:
        charts += _chart(f"chart-{side}-ramp", [{"type": "scatter", "mode": "lines+markers", "name": "chips online",
                                                 "x": [q["quarter"] for q in fleet],
                                                 "y": [q["chips"] for q in fleet]}],
                         {"title": {"text": "the fleet ramp: chips online"}, "yaxis": {"rangemode": "tozero"}})
    runs = [[html.escape(str(run.get("label", ""))), f"{run['chips']:,}", _days(run.get("time_to_train_s")),
             f"{100 * (run.get('reliability') or {}).get('goodput', 0):.1f} %"]
            for run in record.get("frontier_runs") or []]
    frontier = ("<h3>frontier runs</h3>" + _table(["run", "chips", "time to train", "goodput"], runs,
                                                   f"frontier-{side}")) if runs else ""
    flags = record.get("extrapolation") or []
    caveat = f"<p><small>{len(flags)} extrapolation flag(s): see the JSON or report</small></p>" if flags else ""
    return _table(["figure", "value"], rows, f"headline-{side}") + charts + frontier + caveat


RENDER: dict[str, Callable[[dict[str, Any], str], str]] = {"fleet": fleet_column, "rainier": rainier_column}


def results(page: ScenarioPage, query: Mapping[str, str],
            progress: Callable[[str], None] | None = None) -> tuple[str, dict[str, str | None] | None]:
    """The columns' HTML for ``query`` and the first refusal (``{field, message}``: the form
    field it is about, or None), computing what is not remembered."""
    sides = ["a", "b"] if comparing(page, query) else ["a"]
    columns = []
    refusal = None
    names = [("" if side == "a" else "b_") + spec[0] for side in ("a", "b") for spec in page.fields()]
    for side in sides:
        params = api_params(side_values(page, query, side))
        label = side.upper()
        step = None if progress is None else (lambda text, label=label: progress(f"{label}: {text}"))
        try:
            result = answer(page.kind, params, step)
        except SpecError as error:
            message = f"error: {error}"
            if refusal is None:
                refusal = {"field": refused_field(error, names, "" if side == "a" else "b_"), "message": message}
            columns.append(f"<div class='column' id='result-{side}'><h2>{label}</h2>"
                           f"<p class='muted'>no answer: {html.escape(message)}</p></div>")
            continue
        record = result.record
        title = f"{label}: {record.get('scenario', params.get('scenario', ''))}"
        columns.append(f"<div class='column' id='result-{side}'><h2>{html.escape(str(title))}</h2>"
                       + _what_ifs(record) + RENDER[page.kind](record, side)
                       + _downloads(page.kind, params, side) + "</div>")
    return f"<div class='side'>{''.join(columns)}</div>", refusal


# ---- the page --------------------------------------------------------------------------------
SCRIPT = """(function(){
const form=document.getElementById('scenario-form'),results=document.getElementById('results');
function draw(root){root.querySelectorAll('.chart[data-figure]').forEach(function(el){
 const f=JSON.parse(el.dataset.figure);Plotly.newPlot(el,f.data,f.layout,{displaylogo:false,responsive:true});});}
function query(){const p=new URLSearchParams();for(const [k,v] of new FormData(form)){p.append(k,v);}
 return p.toString();}
function place(r){document.querySelectorAll('.refusal').forEach(function(e){e.remove();});if(!r){return;}
 const span=document.createElement('span');span.className='refusal';span.setAttribute('role','alert');
 span.textContent=r.message;const label=r.field&&form.querySelector('label[data-field="'+r.field+'"]');
 if(label){label.appendChild(span);}else{results.prepend(span);}}
function show(a){results.innerHTML=a.html;place(a.refusal);draw(results);results.dataset.state='ready';}
let timer=null,source=null,seq=0;
function update(){const q=query(),mine=++seq;history.replaceState(null,'',location.pathname+'?'+q);
 results.dataset.state='busy';
 if(form.dataset.stream){if(source){source.close();}
  results.innerHTML="<p class='busy' id='progress'>computing\\u2026</p>";
  source=new EventSource(form.dataset.stream+'?'+q);
  source.addEventListener('progress',function(e){const p=document.getElementById('progress');
   if(p){p.textContent='computing\\u2026 '+e.data;}});
  source.addEventListener('done',function(e){source.close();source=null;show(JSON.parse(e.data));});
  source.onerror=function(){if(source){source.close();source=null;
   show({html:'',refusal:{field:null,message:'error: the server stopped answering'}});}};}
 else{fetch(form.dataset.live+'?'+q).then(function(r){return r.json();})
  .then(function(a){if(mine===seq){show(a);}});}}
function later(){clearTimeout(timer);timer=setTimeout(update,400);}
form.querySelectorAll('input[type=range]').forEach(function(e){e.addEventListener('input',later);});
form.querySelectorAll('select,input:not([type=range])').forEach(function(e){e.addEventListener('change',later);});
form.addEventListener('submit',function(ev){ev.preventDefault();clearTimeout(timer);update();});
draw(results);if(results.dataset.state==='pending'){update();}
})();"""


def _column_fields(page: ScenarioPage, values: Mapping[str, str], prefix: str) -> str:
    return "".join(_field(prefix + name, label, values[name], options, slider, hint)
                   for name, label, options, slider, hint in page.fields())


def scenario_page(page: ScenarioPage, query: Mapping[str, str]) -> str:
    """The whole page: the form (A and B), then the results (computed now, or for Rainier when
    not remembered, streamed with progress by the page's script)."""
    compare = "on" if comparing(page, query) else "off"
    a, b = side_values(page, query, "a"), side_values(page, query, "b")
    form = (f"<form id='scenario-form' method='get' action='/{page.kind}' data-live='/{page.kind}/results'"
            + (f" data-stream='/{page.kind}/stream'" if page.stream else "") + ">"
            + "<div class='side'><fieldset class='column'><legend>A</legend>" + _column_fields(page, a, "")
            + "</fieldset><fieldset class='column'><legend>B</legend>" + _column_fields(page, b, "b_")
            + "</fieldset></div>" + _field("compare", "compare A with B", compare, ["on", "off"])
            + "<button type='submit'>plan</button></form>")
    sides = [(a, ""), (b, "b_")] if compare == "on" else [(a, "")]
    refusal: tuple[SpecError, str] | None = None
    waiting = False
    for values, prefix in sides:
        try:
            build_request(page.kind, api_params(values))  # bad input: refused next to its field, now
        except SpecError as error:
            refusal = refusal or (error, prefix)
            continue
        waiting = waiting or (page.stream and not _remembered(page.kind, api_params(values)))
    if waiting:  # the page's script streams the answer with its progress
        shown = with_refusal(form, *refusal) if refusal is not None else form
        body = shown + "<div id='results' data-state='pending'><p class='busy' id='progress'>computing\u2026</p></div>"
    else:
        columns, late = results(page, query)
        placed = ""
        if late is not None:
            placed = f"<span class='refusal' role='alert'>{html.escape(str(late['message']))}</span>"
            if late["field"] is not None:
                start = form.index(f"<label data-field='{late['field']}'>")
                end = form.index("</label>", start)
                form, placed = form[:end] + placed + form[end:], ""
        body = form + f"<div id='results' data-state='ready'>{placed}{columns}</div>"
    scripts = f"<script src='/static/plotly.min.js'></script><script>{SCRIPT}</script>"
    return layout(page.title, f"<p>{html.escape(page.intro)}</p>" + body, scripts)


def _remembered(kind: str, params: Mapping[str, str]) -> bool:
    key = (kind, tuple(sorted((str(k), str(v)) for k, v in params.items())))
    with _LOCK:
        return key in _ANSWERS


def results_json(page: ScenarioPage, query: Mapping[str, str]) -> str:
    """The partial update: ``{html, refusal}``."""
    columns, refusal = results(page, query)
    return json.dumps({"html": columns, "refusal": refusal})


def stream(page: ScenarioPage, query: Mapping[str, str]) -> Iterator[str]:
    """Server-sent events: ``progress`` (each slow step, as the API reports it), then ``done``
    with ``{html, refusal}``."""
    messages: queue.Queue[tuple[str, str]] = queue.Queue()

    def work() -> None:
        try:
            columns, refusal = results(page, query, progress=lambda text: messages.put(("progress", text)))
            messages.put(("done", json.dumps({"html": columns, "refusal": refusal})))
        except Exception as error:  # shown on the page rather than a dead stream
            messages.put(("done", json.dumps({"html": "", "refusal": {"field": None,
                                                                     "message": f"error: {error}"}})))

    threading.Thread(target=work, daemon=True).start()
    yield "event: progress\ndata: started\n\n"
    while True:
        event, data = messages.get()
        yield f"event: {event}\ndata: {' '.join(data.splitlines())}\n\n"
        if event == "done":
            return


# ---- downloads ---------------------------------------------------------------------------------
def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A JSON value as ``dotted.path -> scalar`` (lists of scalars joined by ``;``)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list | tuple):
        if all(not isinstance(item, dict | list | tuple) for item in value):
            return {prefix: ";".join(str(item) for item in value)}
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def download(kind: str, params: Mapping[str, str], ext: str) -> tuple[str, str, str]:
    """``(text, media type, file name)`` of the answer for ``params`` as JSON (exactly the
    API's answer), CSV (fleet: a row per company and quarter; rainier: figure, value) or the HTML
    report (the one ``clusterplan <kind> --report`` writes)."""
    result = answer(kind, params)
    record = json.loads(result.to_json())  # as the API answers it (infinities as null)
    name = f"{kind}-{record.get('scenario', kind)}"
    if ext == "json":
        return result.to_json(), "application/json", f"{name}.json"
    if ext == "csv":
        if kind == "fleet":
            flat = [flatten(quarter) for quarter in record["quarters"]]
            header = list(dict.fromkeys(key for row in flat for key in row))
            return _csv(header, [[row.get(key, "") for key in header] for row in flat]), "text/csv", f"{name}.csv"
        items = [(key, value) for key, value in flatten(record).items() if not key.startswith("search.")]
        return _csv(["figure", "value"], [list(item) for item in items]), "text/csv", f"{name}.csv"
    from clusterplan.report.documents import render_html

    if kind == "fleet":
        from clusterplan.report.fleet import fleet_document

        document = fleet_document(str(record["scenario"]), result.record["quarters"])
    else:
        from clusterplan.report.rainier import rainier_document

        document = rainier_document(result.record)
    return render_html(document), "text/html", f"{name}.html"
