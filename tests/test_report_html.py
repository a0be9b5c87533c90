"""The HTML reports in a real browser: Debian's Chromium driven by Playwright (no browser
download). Charts must render offline (plotly.js is inlined; every network request is refused),
the console must stay free of errors, axis titles carry units, and the page prints.

Skipped where Chromium or Playwright is missing (``apt-get install chromium``; Playwright is a
dev dependency)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cliutil import run_cli
from clusterplan.report.documents import Report, bar_chart, line_chart, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def load(browser: Any, page_file: Path) -> tuple[Any, list[str]]:
    """Open ``page_file`` offline; (the page, its console errors and uncaught exceptions)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
    page.goto(page_file.as_uri(), wait_until="load")
    page.wait_for_selector("svg.main-svg", timeout=15_000)
    return page, errors


def texts(page: Any, selector: str) -> list[str]:
    """The text of every element matching ``selector`` (SVG text has no inner text)."""
    found: list[str] = page.eval_on_selector_all(selector, "nodes => nodes.map(node => node.textContent)")
    return found


def check_page(browser: Any, page_file: Path, charts: int) -> Any:
    page, errors = load(browser, page_file)
    assert page.locator("div.chart").count() == charts
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= {charts}")
    assert page.locator(".js-plotly-plot").count() == charts  # every chart drawn by Plotly
    assert errors == []
    headings = page.locator("h2").all_inner_texts()
    assert headings[:2] == ["Summary", "Assumptions and caveats"]  # the figures people quote come first
    page.emulate_media(media="print")
    assert all(not bar.is_visible() for bar in page.locator(".modebar").all())  # no chart toolbars on paper
    assert len(page.pdf(format="A4")) > 10_000
    return page


def test_a_report_renders_its_charts_with_axis_units(browser: Any, tmp_path: Path) -> None:
    report = Report("Test report", subtitle="made by a test")
    report.quote("answer", "42 days", "the basis")
    report.assumptions.append("nothing is assumed")
    report.add("Bars", "| part | seconds |\n|---|---:|\n| compute | 1.5 |",
               bar_chart("Step", ["compute", "comm"], [1.5, 0.5], "time per step (s)"), "bars")
    report.add("Lines", "two series", line_chart("Ramp", ["2025Q1", "2025Q2"], {"a": [1, 2], "b": [2, 3]},
                                                 "facility power (MW)"), "lines")
    written = write_report(report, tmp_path, "test")
    page = check_page(browser, Path(written["html"]), charts=2)
    titles = texts(page, ".xtitle, .ytitle")
    assert "time per step (s)" in titles and "facility power (MW)" in titles
    assert page.locator("td.right").first.inner_text() == "1.5"  # numbers right-aligned
    assert (tmp_path / "test-bars.png").exists() and "![Bars](test-bars.png)" in Path(written["markdown"]).read_text()


def test_the_fleet_report_in_a_browser(browser: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, ["fleet", "hyperscalers-2025", "--no-runs", "--report-dir", str(tmp_path)])
    assert code == 0, err
    page = check_page(browser, tmp_path / "fleet-hyperscalers-2025.html", charts=3)
    assert "cumulative AI capex (US$ B)" in texts(page, ".ytitle")


@pytest.mark.slow
def test_the_rainier_report_in_a_browser(browser: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, ["rainier", "--json", "--report-dir", str(tmp_path)])
    assert code == 0, err
    page = check_page(browser, tmp_path / "rainier.html", charts=6)
    figures = page.locator("#summary .figure dt").all_inner_texts()
    assert any("llama3-405b" in figure for figure in figures)
    assert "time per step (ms)" in texts(page, ".xtitle")
