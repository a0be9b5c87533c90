"""Markdown and self-contained HTML reports with matplotlib charts (PNG embedded as base64).

Each report is a list of sections (title, Markdown text, optional chart); the same sections
render to both files, so the numbers in the two always agree with the JSON they come from.
Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG in memory
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


@dataclass
class Section:
    title: str
    markdown: str
    chart: Figure | None = None
    chart_name: str = ""


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)

    def add(self, title: str, markdown: str, chart: Figure | None = None, chart_name: str = "") -> None:
        self.sections.append(Section(title, markdown, chart, chart_name))


def _png(figure: Figure) -> bytes:
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


def _markdown_table_to_html(text: str) -> str:
    """Render the Markdown subset the reports use: paragraphs, '- ' lists, pipe tables and
    fenced code blocks."""
    out: list[str] = []
    lines = text.strip().splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
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
                rows.append([cell.strip() for cell in lines[index].strip("|").split("|")])
                index += 1
            header, body = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
            out.append("</table>")
            continue
        if line.startswith("- "):
            items = []
            while index < len(lines) and lines[index].startswith("- "):
                items.append(f"<li>{html.escape(lines[index][2:])}</li>")
                index += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
        index += 1
    return "\n".join(out)


def write_report(report: Report, directory: Path, stem: str) -> dict[str, str]:
    """Write ``stem.md`` (charts as PNG files beside it) and a self-contained ``stem.html``."""
    charts: list[tuple[Section, bytes]] = [(s, _png(s.chart)) for s in report.sections if s.chart is not None]
    markdown: list[str] = [f"# {report.title}", ""]
    body: list[str] = [f"<h1>{html.escape(report.title)}</h1>"]
    images = {id(section): data for section, data in charts}
    written: dict[str, str] = {}
    for section in report.sections:
        markdown += [f"## {section.title}", "", section.markdown.strip(), ""]
        body += [f"<h2>{html.escape(section.title)}</h2>", _markdown_table_to_html(section.markdown)]
        data = images.get(id(section))
        if data is not None:
            name = f"{stem}-{section.chart_name or len(written)}.png"
            _write(directory / name, data)
            written[name] = str(directory / name)
            markdown += [f"![{section.title}]({name})", ""]
            encoded = base64.b64encode(data).decode("ascii")
            body.append(f'<img alt="{html.escape(section.title)}" src="data:image/png;base64,{encoded}">')
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}th{background:#eee}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:6px;white-space:pre-wrap;word-break:break-all}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    _write(directory / f"{stem}.md", "\n".join(markdown).encode("utf-8"))
    _write(directory / f"{stem}.html", page.encode("utf-8"))
    written["markdown"] = str(directory / f"{stem}.md")
    written["html"] = str(directory / f"{stem}.html")
    return written


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], unit: str) -> Figure:
    figure, axis = plt.subplots(figsize=(7, 3.2))
    axis.barh(list(labels), list(values), color="#4477aa")
    axis.set_xlabel(unit)
    axis.set_title(title)
    axis.invert_yaxis()
    return figure


def line_chart(title: str, x: Sequence[str], series: Mapping[str, Sequence[float]], unit: str) -> Figure:
    figure, axis = plt.subplots(figsize=(7, 3.2))
    for name, values in series.items():
        axis.plot(list(x), list(values), marker="o", label=name)
    axis.set_ylabel(unit)
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return figure
