"""Reports an analyst can forward: Markdown, and one self-contained HTML page.

A report is a summary (the figures people quote, each with a note), the assumptions and caveats
behind them, and sections (title, Markdown text and tables, an optional chart). The same sections
render to both files, so the numbers in the two always agree with the JSON they come from.

* HTML: summary first, then assumptions, then the sections; tables with numbers right-aligned;
  interactive Plotly charts with the plotly.js bundle inlined (the page works offline, from a
  mail attachment); print CSS (charts and table rows are not split across pages).
* Markdown: the same text and tables; each chart as a PNG beside it (matplotlib).

A chart is data (:class:`Chart`: categories or x values, named series, axis titles with units),
not a drawing: each file draws it its own way. Files are written atomically (temporary file,
then rename).
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from clusterplan import __version__


@dataclass(frozen=True)
class Chart:
    """A bar chart (horizontal bars, one per category) or a line chart (series over x), with
    axis titles that carry units, e.g. ``"time per step (ms)"``."""

    kind: Literal["bar", "line"]
    title: str
    x: list[str]
    series: dict[str, list[float]]
    x_title: str
    y_title: str


@dataclass(frozen=True)
class Figure:
    """One figure of the summary: ``label`` (what), ``value`` (as quoted, with its unit) and
    an optional ``note`` (the basis: which plan, at which assumption)."""

    label: str
    value: str
    note: str = ""


@dataclass
class Section:
    title: str
    markdown: str
    chart: Chart | None = None
    chart_name: str = ""


@dataclass
class Report:
    title: str
    subtitle: str = ""
    summary: list[Figure] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def add(self, title: str, markdown: str, chart: Chart | None = None, chart_name: str = "") -> None:
        self.sections.append(Section(title, markdown, chart, chart_name))

    def quote(self, label: str, value: str, note: str = "") -> None:
        """Add a figure to the summary."""
        self.summary.append(Figure(label, value, note))


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], value_title: str) -> Chart:
    """Horizontal bars, one per label; ``value_title`` names the values and their unit."""
    return Chart("bar", title, [str(label) for label in labels], {title: [float(v) for v in values]},
                 value_title, "")


def line_chart(title: str, x: Sequence[str], series: Mapping[str, Sequence[float]], y_title: str,
               x_title: str = "quarter") -> Chart:
    """One line per series over ``x``; ``y_title`` names the values and their unit."""
    return Chart("line", title, [str(value) for value in x],
                 {name: [float(v) for v in values] for name, values in series.items()}, x_title, y_title)


# ---- Plotly (HTML) -------------------------------------------------------------------------

_COLOURS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb"]


def plotly_figure(chart: Chart) -> dict[str, Any]:
    """The chart as a Plotly figure (JSON-ready ``data`` and ``layout``)."""
    if chart.kind == "bar":
        (values,) = chart.series.values()
        data: list[dict[str, Any]] = [{
            "type": "bar", "orientation": "h", "x": values, "y": chart.x, "marker": {"color": _COLOURS[0]},
            "hovertemplate": f"%{{y}}: %{{x:,.4g}} ({chart.x_title})<extra></extra>"}]
        layout: dict[str, Any] = {
            "xaxis": {"title": {"text": chart.x_title}, "rangemode": "tozero", "automargin": True},
            "yaxis": {"autorange": "reversed", "automargin": True},
            "height": 120 + 34 * len(chart.x), "showlegend": False}
    else:
        data = [{"type": "scatter", "mode": "lines+markers", "name": name, "x": chart.x, "y": values,
                 "line": {"color": _COLOURS[index % len(_COLOURS)]},
                 "hovertemplate": f"{name}, %{{x}}: %{{y:,.4g}}<extra></extra>"}
                for index, (name, values) in enumerate(chart.series.items())]
        layout = {"xaxis": {"title": {"text": chart.x_title}, "type": "category", "automargin": True},
                  "yaxis": {"title": {"text": chart.y_title}, "rangemode": "tozero", "automargin": True},
                  "height": 360, "showlegend": len(chart.series) > 1,
                  "legend": {"orientation": "h", "y": -0.25}}
    layout.update({"title": {"text": chart.title}, "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
                   "font": {"family": "system-ui, sans-serif", "size": 13}, "paper_bgcolor": "white",
                   "plot_bgcolor": "white"})
    layout["xaxis"]["gridcolor"] = layout["yaxis"]["gridcolor"] = "#e5e5e5"
    return {"data": data, "layout": layout}


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(value, allow_nan=False).replace("</", "<\\/")


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


# ---- Markdown -> HTML ----------------------------------------------------------------------

_INLINE_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """Escape ``text``; `code` spans become <code>."""
    return _INLINE_CODE.sub(lambda m: f"<code>{m.group(1)}</code>", html.escape(text))


def markdown_to_html(text: str) -> str:
    """Render the Markdown subset the reports use: paragraphs, '- ' lists, pipe tables (their
    alignment row sets each column's alignment) and `code` spans."""
    out: list[str] = []
    lines = text.strip().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):  # a fenced code block (the commands that reproduce a plan)
            code = []
            index += 1
            while index < len(lines) and not lines[index].startswith("```"):
                code.append(html.escape(lines[index]))
                index += 1
            out.append("<pre><code>" + "\n".join(code) + "</code></pre>")
            index += 1
            continue
        if line.startswith("|"):
            rows = []
            while index < len(lines) and lines[index].startswith("|"):
                rows.append([cell.strip() for cell in lines[index].strip().strip("|").split("|")])
                index += 1
            header = rows[0]
            rule = next((r for r in rows[1:] if r and set("".join(r)) <= set("-: ")), None)
            align = ["right" if cell.endswith(":") else "left" for cell in rule] if rule else ["left"] * len(header)
            body = [r for r in rows[1:] if r is not rule]
            out.append("<div class='table'><table><thead><tr>" + "".join(
                f"<th class='{align[i] if i < len(align) else 'left'}'>{_inline(c)}</th>"
                for i, c in enumerate(header)) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td class='{align[i] if i < len(align) else 'left'}'>{_inline(c)}</td>"
                                     for i, c in enumerate(row)) + "</tr>" for row in body]
            out.append("</tbody></table></div>")
            continue
        if line.startswith("- "):
            items = []
            while index < len(lines) and lines[index].startswith("- "):
                items.append(f"<li>{_inline(lines[index][2:])}</li>")
                index += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        if line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        index += 1
    return "\n".join(out)


_STYLE = """
:root{--ink:#1f2328;--muted:#59636e;--rule:#d1d9e0;--accent:#4477aa;--card:#f6f8fa}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);max-width:1040px;
 margin:2em auto;padding:0 1.2em;line-height:1.45}
h1{margin:0 0 .2em;font-size:1.9em}h2{margin-top:1.8em;border-bottom:1px solid var(--rule);padding-bottom:.2em}
.subtitle,.meta{color:var(--muted);margin:.2em 0}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:.8em;margin:1em 0;padding:0}
.figure{background:var(--card);border:1px solid var(--rule);border-left:4px solid var(--accent);border-radius:6px;
 padding:.7em .9em;margin:0}
.figure dt{font-size:.85em;color:var(--muted)}.figure dd{margin:.15em 0;font-size:1.45em;font-weight:600}
.figure .note{font-size:.8em;color:var(--muted)}
.assumptions li{margin:.25em 0}
.table{overflow-x:auto}table{border-collapse:collapse;margin:1em 0;font-variant-numeric:tabular-nums}
td,th{border:1px solid var(--rule);padding:4px 9px}th{background:var(--card)}
.right{text-align:right;white-space:nowrap}.left{text-align:left}
code{background:var(--card);padding:0 .25em;border-radius:3px}
pre{background:var(--card);padding:.6em;white-space:pre-wrap;word-break:break-all}
.chart{width:100%;min-height:200px;margin:1em 0}
footer{margin-top:3em;color:var(--muted);font-size:.85em}
@page{margin:14mm}
@media print{
 body{max-width:none;margin:0;padding:0;font-size:10pt}
 .modebar-container,.modebar{display:none!important}
 .chart,.figure,table,tr{break-inside:avoid;page-break-inside:avoid}
 h2{break-after:avoid;page-break-after:avoid}
 .figures{grid-template-columns:repeat(3,1fr)}
 a{color:inherit;text-decoration:none}
}
"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (plotly.js inlined: works offline)."""
    body: list[str] = [f"<header><h1>{html.escape(report.title)}</h1>"]
    if report.subtitle:
        body.append(f"<p class='subtitle'>{_inline(report.subtitle)}</p>")
    body.append("</header>")
    if report.summary:
        body.append("<section id='summary'><h2>Summary</h2><dl class='figures'>")
        body += [f"<div class='figure'><dt>{html.escape(f.label)}</dt><dd>{html.escape(f.value)}</dd>"
                 + (f"<div class='note'>{_inline(f.note)}</div>" if f.note else "") + "</div>" for f in report.summary]
        body.append("</dl></section>")
    if report.assumptions:
        body.append("<section id='assumptions'><h2>Assumptions and caveats</h2><ul class='assumptions'>")
        body += [f"<li>{_inline(item)}</li>" for item in report.assumptions]
        body.append("</ul></section>")
    config = {"responsive": True, "displaylogo": False, "toImageButtonOptions": {"format": "svg"}}
    for number, section in enumerate(report.sections):
        body += [f"<section><h2>{html.escape(section.title)}</h2>", markdown_to_html(section.markdown)]
        if section.chart is not None:
            name = f"chart-{re.sub(r'[^a-z0-9-]', '-', (section.chart_name or str(number)).lower())}"
            figure = plotly_figure(section.chart)
            body.append(f"<div class='chart' id='{name}' role='img' aria-label='{html.escape(section.chart.title)}'>"
                        "</div>")
            body.append(f"<script>Plotly.newPlot({_script_json(name)}, {_script_json(figure['data'])}, "
                        f"{_script_json(figure['layout'])}, {_script_json(config)});</script>")
        body.append("</section>")
    body.append(f"<footer>clusterplan {html.escape(__version__)}: estimates from public specifications; "
                "the JSON behind every number: the same command with --json.</footer>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style>"
            f"<script>{_plotly_js()}</script></head><body>{''.join(body)}</body></html>")


# ---- Markdown and PNG ----------------------------------------------------------------------

def render_markdown(report: Report, images: Mapping[int, str]) -> str:
    """The report as Markdown; ``images`` maps a section's index to its chart's PNG file name."""
    lines = [f"# {report.title}", ""]
    if report.subtitle:
        lines += [report.subtitle, ""]
    if report.summary:
        lines += ["## Summary", "", "| figure | value | basis |", "|---|---:|---|"]
        lines += [f"| {f.label} | {f.value} | {f.note} |" for f in report.summary]
        lines.append("")
    if report.assumptions:
        lines += ["## Assumptions and caveats", ""] + [f"- {item}" for item in report.assumptions] + [""]
    for index, section in enumerate(report.sections):
        lines += [f"## {section.title}", "", section.markdown.strip(), ""]
        if index in images:
            lines += [f"![{section.title}]({images[index]})", ""]
    return "\n".join(lines)


def chart_png(chart: Chart) -> bytes:
    """The chart drawn by matplotlib, as PNG bytes (for the Markdown report)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to PNG in memory
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.2))
    if chart.kind == "bar":
        (values,) = chart.series.values()
        axis.barh(chart.x, values, color=_COLOURS[0])
        axis.set_xlabel(chart.x_title)
        axis.invert_yaxis()
    else:
        for index, (name, values) in enumerate(chart.series.items()):
            axis.plot(chart.x, values, marker="o", label=name, color=_COLOURS[index % len(_COLOURS)])
        axis.set_xlabel(chart.x_title)
        axis.set_ylabel(chart.y_title)
        if len(chart.series) > 1:
            axis.legend(fontsize=8)
        axis.set_ylim(bottom=0)
    axis.set_title(chart.title)
    axis.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; reports are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_report(report: Report, directory: Path, stem: str) -> dict[str, str]:
    """Write ``stem.md`` (charts as PNG files beside it) and a self-contained ``stem.html``."""
    written: dict[str, str] = {}
    images: dict[int, str] = {}
    for index, section in enumerate(report.sections):
        if section.chart is not None:
            name = f"{stem}-{section.chart_name or index}.png"
            _write(directory / name, chart_png(section.chart))
            written[name] = str(directory / name)
            images[index] = name
    _write(directory / f"{stem}.md", render_markdown(report, images).encode("utf-8"))
    _write(directory / f"{stem}.html", render_html(report).encode("utf-8"))
    written["markdown"] = str(directory / f"{stem}.md")
    written["html"] = str(directory / f"{stem}.html")
    return written
