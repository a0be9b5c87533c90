"""The web planner: /api/<question> answers what the CLI's --json prints, refuses bad input
with HTTP 422 and the one-line refusal, takes no file paths; the pages render (in Debian's
Chromium, offline: every request off 127.0.0.1 is refused) with no console errors."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cliutil import run_cli

fastapi_testclient = pytest.importorskip("fastapi.testclient", reason="fastapi (and httpx) not installed")
from clusterplan.web.app import create_app  # noqa: E402

TRAIN = {"model": "llama3-70b", "system": "dgx-h100", "chips": "1024", "tp": "8", "pp": "4", "seq": "8192",
         "global_batch": "512"}


@pytest.fixture(scope="module")
def client() -> Any:
    return fastapi_testclient.TestClient(create_app())


def cli(capsys: Any, *argv: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, [*argv, "--json"])
    assert code == 0, err
    return dict(json.loads(out))


def test_api_train_is_the_cli_json_get_and_post(client: Any, capsys: Any) -> None:
    expected = cli(capsys, "train", "--model", "llama3-70b", "--system", "dgx-h100", "--chips", "1024", "--tp", "8",
                   "--pp", "4", "--seq", "8192", "--global-batch", "512")
    got = client.get("/api/train", params=TRAIN)
    assert got.status_code == 200 and got.json() == expected
    posted = client.post("/api/train", json={"model": "llama3-70b", "system": "dgx-h100", "chips": 1024,
                                             "plan": {"tp": 8, "pp": 4, "seq_len": 8192, "global_batch": 512}})
    assert posted.status_code == 200 and posted.json()["step_time_s"] == expected["step_time_s"]


def test_api_search_serve_capacity_reliability_fleet(client: Any, capsys: Any) -> None:
    expected = cli(capsys, "search", "--model", "llama3-8b", "--system", "dgx-h100", "--chips", "64", "--seq", "4096",
                   "--global-batch", "256", "--top", "3")
    got = client.get("/api/search", params={"model": "llama3-8b", "system": "dgx-h100", "chips": 64, "seq": 4096,
                                            "global_batch": 256, "top": 3}).json()
    assert [b["step_time_s"] for b in got["best"]] == [b["step_time_s"] for b in expected["best"]]
    expected = cli(capsys, "serve", "--model", "llama3-8b", "--system", "dgx-h100", "--tp", "2")
    assert client.get("/api/serve", params={"model": "llama3-8b", "system": "dgx-h100", "tp": 2}).json() == expected
    expected = cli(capsys, "capacity", "--model", "llama3-8b", "--system", "dgx-h100", "--demand", "1M",
                   "--slo-ttft", "2s", "--slo-tpot", "100ms", "--requests", "200", "--top", "2")
    got = client.get("/api/capacity", params={"model": "llama3-8b", "system": "dgx-h100", "demand": "1M",
                                              "slo_ttft": "2s", "slo_tpot": "100ms", "requests": 200, "top": 2})
    assert got.json() == expected
    expected = cli(capsys, "reliability", "--model", "llama3-70b", "--system", "dgx-h100", "--chips", "1024",
                   "--tp", "8", "--pp", "4", "--tokens", "15T")
    got = client.post("/api/reliability", json={"model": "llama3-70b", "system": "dgx-h100", "chips": 1024, "tp": 8,
                                                "pp": 4, "tokens": "15T"})
    assert got.json() == expected
    expected = cli(capsys, "fleet", "amazon-2025", "--no-runs")
    assert client.get("/api/fleet", params={"scenario": "amazon-2025", "runs": "false"}).json() == expected


def test_api_campus_is_the_cli_json(client: Any, capsys: Any) -> None:
    expected = cli(capsys, "campus", "rainier", "--days", "1", "--policy", "shared")
    got = client.get("/api/campus", params={"scenario": "rainier", "days": "1", "policy": "shared"}).json()
    for record in (expected, got):  # measured wall-clock times differ run to run
        record.pop("timing_s")
        for job in record["training"]:
            job.pop("search_time_s", None)
    assert got == expected
    assert client.get("/api/campus", params={"days": "0"}).status_code == 422


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/api/train", {**TRAIN, "model": "nosuch"}, "--model"),
    ("/api/train", {**TRAIN, "tp": "0"}, "--tp"),
    ("/api/train", {**TRAIN, "chips": "many"}, "--chips"),
    ("/api/train", {**TRAIN, "model": "/etc/passwd"}, "--model"),
    ("/api/train", {**TRAIN, "colour": "red"}, "colour"),
    ("/api/serve", {"model": "llama3-8b", "system": "dgx-h100", "trace": "/tmp/x.csv"}, "trace"),
    ("/api/capacity", {"model": "llama3-8b", "system": "dgx-h100", "demand": "-1", "slo_ttft": "2s",
                       "slo_tpot": "1s"}, "--demand"),
    ("/api/rainier", {"scenario": "../../x.yaml"}, "--scenario"),
])
def test_api_refuses_with_422_and_one_line(client: Any, path: str, params: dict[str, str], field: str) -> None:
    got = client.get(path, params=params)
    assert got.status_code == 422, got.text
    body = got.json()
    assert set(body) == {"field", "value", "rule", "message"} and body["field"] == field
    assert "\n" not in body["message"] and body["message"].startswith(field)


def test_docs_are_served_without_a_cdn(client: Any) -> None:
    page = client.get("/docs").text
    for kind in ("train", "search", "serve", "capacity", "reliability", "fleet", "rainier"):
        assert f"/api/{kind}" in page
    assert "cdn" not in page.lower() and "<script" not in page
    assert client.get("/openapi.json").status_code == 200


def test_pages_render_and_refuse(client: Any) -> None:
    page = client.get("/failures", params={"chips": "1024"}).text
    assert "goodput" in page and "class='refusal'" not in page
    assert "class='band-basis'" in page and "hopper dense training runs" in page  # where its range comes from
    page = client.get("/failures", params={"model": "nosuch"}).text
    assert "error: --model=&#x27;nosuch&#x27;" in page
    assert client.get("/static/plotly.min.js").text.startswith("/**")


# ---- in a browser --------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    for _ in range(200):
        if instance.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One offline Chromium for the module's page tests."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield instance
        finally:
            instance.close()


class Tab:
    """A page of ``browser`` that refuses every request off the test server and records console
    errors; ``check()`` asserts there were none."""

    def __init__(self, browser: Any, server: str) -> None:
        self.context = browser.new_context(viewport={"width": 1300, "height": 900}, accept_downloads=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

        def route(request_route: Any) -> None:
            if request_route.request.url.startswith(server):
                request_route.continue_()
            else:
                self.blocked.append(request_route.request.url)
                request_route.abort()

        self.page.route("**/*", route)

    def check(self) -> None:
        assert self.errors == [] and self.blocked == []

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, server: str) -> Iterator[Tab]:
    opened = Tab(browser, server)
    yield opened
    opened.close()


def chart_points(page: Any, selector: str) -> list[Any]:
    """The y values Plotly drew in the chart ``selector`` (its traces' data, not the markup)."""
    page.wait_for_function(f"document.querySelector({json.dumps(selector)})?._fullData?.length > 0",
                           timeout=20_000)
    assert page.locator(f"{selector} svg.main-svg").count() > 0
    return list(page.evaluate(f"[].concat(...document.querySelector({json.dumps(selector)}).data"
                              ".map(t => Array.from(t.y)))"))


def downloaded(page: Any, selector: str) -> str:
    with page.expect_download(timeout=60_000) as info:
        page.click(selector)
    path = info.value.path()
    with open(path, encoding="utf-8") as stream:
        return stream.read()


def test_training_page_in_chromium(tab: Tab, server: str) -> None:
    page = tab.page
    page.goto(f"{server}/train?model=llama3-8b&system=dgx-h100&chips=64&seq=4096&global_batch=256&top=5",
              wait_until="load")
    page.wait_for_selector("svg.main-svg", timeout=20_000)
    assert page.locator("#plans tr").count() == 6  # header and five plans
    assert "clusterplan train --model llama3-8b" in page.locator("#command").inner_text()
    # the step time and MFU with their ranges, and where the ranges come from
    step = page.locator("#plans tr").nth(1).locator("td").nth(3).inner_text()
    assert re.fullmatch(r"\d+\.\d{3} \(\d+\.\d{3}-\d+\.\d{3}\)", step), step
    low, high = (float(v) for v in step.split("(")[1].rstrip(")").split("-"))
    assert low < high
    assert "hopper dense training runs" in page.locator(".band-basis").inner_text()
    assert page.locator("#time tr").count() > 1 and page.locator("#memory tr").count() > 1
    page.fill("input[name=chips]", "-3")
    page.click("button[type=submit]")
    page.wait_for_selector("label[data-field=chips] .refusal", timeout=20_000)
    assert "--chips" in page.locator("label[data-field=chips] .refusal").inner_text()
    assert "chips=-3" in page.url  # the state is in the URL
    tab.check()


SERVE = "model=llama3-8b&systems=trn2,dgx-h100,dgx-b200&demand=200k&slo_ttft=2s&slo_tpot=100ms"


def test_serving_page_compares_systems_in_chromium(tab: Tab, server: str, client: Any) -> None:
    page = tab.page
    page.goto(f"{server}/serve?{SERVE}", wait_until="load")
    rows = page.locator("#compare tr")
    assert rows.count() == 4  # header and one row per system: chip, chips, MW and $/M tokens in one view
    systems = [rows.nth(i).locator("td").first.inner_text() for i in range(1, 4)]
    assert systems == ["trn2", "dgx-h100", "dgx-b200"]
    expected = client.get("/api/capacity", params={"model": "llama3-8b", "system": "dgx-b200", "demand": "200k",
                                                   "slo_ttft": "2s", "slo_tpot": "100ms", "input_tokens": 1000,
                                                   "output_tokens": 200, "top": 3, "requests": 300}).json()
    best, bands = expected["ranked"][0], expected["bands"]
    cells = rows.nth(3).locator("td")
    # each figure with its cross-validated range, as the API gives them
    chips_low, chips_high = bands["best.chips"]
    assert cells.nth(3).inner_text() == f"{best['chips']:,} ({chips_low:,.0f}-{chips_high:,.0f})"
    mw_low, mw_high = (v / 1e6 for v in bands["best.power_w.facility_w"])
    assert cells.nth(4).inner_text() == f"{best['power_w']['facility_w'] / 1e6:.2f} ({mw_low:.2f}-{mw_high:.2f})"
    assert best["power_w"]["facility_w"] > 0
    cost_low, cost_high = bands["best.usd_per_million_output_tokens"]
    assert cells.nth(5).inner_text() == (f"{best['usd_per_million_output_tokens']:.3f} "
                                         f"({cost_low:.3f}-{cost_high:.3f})")
    assert "Ranges hold 80 %" in page.locator(".band-basis").first.inner_text()
    points = chart_points(page, "#chart")
    assert len(points) == 6 and all(isinstance(p, int | float) and p > 0 for p in points)
    # A refusal is shown next to its field; the state is in the URL and comes back from it.
    page.fill("input[name=demand]", "-5")
    page.click("button[type=submit]")
    page.wait_for_selector("label[data-field=demand] .refusal", timeout=20_000)
    assert page.locator("label[data-field=demand] .refusal").inner_text().startswith("error: --demand='-5'")
    assert "demand=-5" in page.url and "systems=trn2%2Cdgx-h100%2Cdgx-b200" in page.url
    page.goto(page.url, wait_until="load")
    assert page.input_value("input[name=demand]") == "-5"
    assert page.input_value("input[name=systems]") == "trn2,dgx-h100,dgx-b200"
    tab.check()


def test_failures_page_in_chromium(tab: Tab, server: str, client: Any) -> None:
    page = tab.page
    query = "model=llama3-70b&system=dgx-h100&chips=1024&tp=8&pp=4&tokens=15T&recovery=wait&checkpoint=async"
    page.goto(f"{server}/failures?{query}", wait_until="load")
    expected = client.get("/api/reliability", params=dict(p.split("=") for p in query.split("&"))).json()
    assert page.locator("#goodput tr").nth(1).locator("td").nth(1).inner_text() == f"{100 * expected['goodput']:.1f} %"
    assert expected["band_basis"] in page.locator(".band-basis").inner_text()
    points = chart_points(page, "#chart")
    assert points == pytest.approx(list(expected["rates_per_day_by_cause"].values()))
    assert page.input_value("select[name=recovery]") == "wait"  # the URL's state is the form's
    page.fill("input[name=chips]", "many")
    page.click("button[type=submit]")
    page.wait_for_selector("label[data-field=chips] .refusal", timeout=20_000)
    assert "--chips" in page.locator("label[data-field=chips] .refusal").inner_text()
    assert "chips=many" in page.url and "checkpoint=async" in page.url
    tab.check()


def _last_chips(record: dict[str, Any]) -> str:
    return f"{record['quarters'][-1]['chips']:,}"


def test_fleet_page_side_by_side_in_chromium(tab: Tab, server: str, client: Any) -> None:
    page = tab.page
    page.goto(f"{server}/fleet?scenario=amazon-2025&b_scenario=rainier&compare=on", wait_until="load")
    base = client.get("/api/fleet", params={"scenario": "amazon-2025", "runs": "false"}).json()
    other = client.get("/api/fleet", params={"scenario": "rainier", "runs": "false"}).json()
    assert page.locator("#result-a h2").inner_text() == "A: amazon-2025"
    assert page.locator("#result-b h2").inner_text() == "B: rainier"
    assert page.locator("#headline-a tr").nth(1).locator("td").nth(2).inner_text() == _last_chips(base)
    assert page.locator("#headline-b tr").nth(1).locator("td").nth(2).inner_text() == _last_chips(other)
    points = chart_points(page, "#chart-a-chips")
    assert max(points) == pytest.approx(base["quarters"][-1]["chips"] / 1e3)
    assert max(chart_points(page, "#chart-b-power")) > 0
    # The what-if slider updates the answer in place (debounced) and the URL with it.
    page.eval_on_selector("input[name=capex_scale]",
                          "e => { e.value = '2'; e.dispatchEvent(new Event('input', {bubbles: true})); }")
    page.wait_for_function("location.search.includes('capex_scale=2')", timeout=20_000)
    scaled = client.get("/api/fleet", params={"scenario": "amazon-2025", "runs": "false", "capex_scale": 2}).json()
    assert _last_chips(scaled) != _last_chips(base)
    page.wait_for_function(f"document.querySelector('#headline-a tr:nth-child(2) td:nth-child(3)')?.innerText"
                           f" === {json.dumps(_last_chips(scaled))}", timeout=20_000)
    assert max(chart_points(page, "#chart-a-chips")) == pytest.approx(scaled["quarters"][-1]["chips"] / 1e3)
    # Downloads: the JSON is the API's answer, the CSV a table, the HTML the report.
    assert json.loads(downloaded(page, "#download-a-json")) == scaled
    rows = downloaded(page, "#download-a-csv").splitlines()
    assert rows[0].startswith("company,quarter,") and len(rows) == 1 + len(scaled["quarters"])
    assert rows[-1].split(",")[1] == scaled["quarters"][-1]["quarter"]
    report = downloaded(page, "#download-b-html")
    assert "Fleet scenario: rainier" in report and "Plotly.newPlot" in report
    # A bad value in B: the one-line refusal next to that field; A keeps its answer.
    page.fill("input[name=b_ai_share]", "2")
    page.press("input[name=b_ai_share]", "Enter")
    page.wait_for_selector("label[data-field=b_ai_share] .refusal", timeout=20_000)
    assert page.locator("label[data-field=b_ai_share] .refusal").inner_text().startswith("error: --ai-share='2'")
    assert page.locator("#headline-a").count() == 1
    # The URL holds both columns: opened again, it shows the same form, answer and refusal.
    url = page.url
    assert "b_ai_share=2" in url and "capex_scale=2" in url and "b_scenario=rainier" in url
    page.goto(url, wait_until="load")
    assert page.input_value("input[name=capex_scale]") == "2"
    assert page.input_value("select[name=b_scenario]") == "rainier"
    assert "--ai-share" in page.locator("label[data-field=b_ai_share] .refusal").inner_text()
    assert page.locator("#headline-a tr").nth(1).locator("td").nth(2).inner_text() == _last_chips(scaled)
    tab.check()


RAINIER_SMALL = {"chips": "4096", "tokens": "1T", "frontier_runs": "false", "serving": "false"}


def _without_times(value: Any) -> Any:
    """A record without its measured wall-clock times (they differ run to run)."""
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if not k.endswith("time_s") or "search" not in k}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def test_rainier_page_streams_progress_in_chromium(tab: Tab, server: str, client: Any) -> None:
    page = tab.page
    query = "&".join([*(f"{k}={v}" for k, v in RAINIER_SMALL.items()),
                      *(f"b_{k}={v}" for k, v in RAINIER_SMALL.items()), "b_failure_scale=3", "compare=on"])
    progress: list[str] = []
    page.expose_function("noteProgress", lambda text: progress.append(str(text)))
    page.add_init_script("new MutationObserver(() => { const p = document.getElementById('progress');"
                         " if (p && window.noteProgress) window.noteProgress(p.textContent); })"
                         ".observe(document, {subtree: true, childList: true, characterData: true});")
    page.goto(f"{server}/rainier?{query}", wait_until="load")
    page.wait_for_selector("#headline-b", timeout=60_000)
    assert any("computing" in text for text in progress)  # the page showed it was working...
    assert any("A: searching" in text for text in progress)  # ...and the API's progress, streamed
    expected = client.get("/api/rainier", params=RAINIER_SMALL).json()
    assert page.locator("#result-a h2").inner_text() == "A: rainier"
    goodput_a = chart_points(page, "#chart-a-goodput")
    goodput_b = chart_points(page, "#chart-b-goodput")
    assert goodput_a == pytest.approx([100 * row["goodput"] for row in expected["reliability"]])
    # Three times the failure rates: the scenario's recovery loses more; the catalog's Llama 3-era
    # recovery (the comparison row, at the catalog's rates) stays as it was.
    assert goodput_b[0] == pytest.approx(goodput_a[0]) and goodput_b[1] < goodput_a[1]
    assert chart_points(page, "#chart-a-ramp") == [q["chips"] for q in expected["fleet"]]
    assert _without_times(json.loads(downloaded(page, "#download-a-json"))) == _without_times(expected)
    rows = downloaded(page, "#download-b-csv").splitlines()
    assert rows[0] == "figure,value" and "chips,4096" in rows and "overrides.failure_scale,3.0" in rows
    assert "Project Rainier" in downloaded(page, "#download-a-html")
    # A bad value is refused next to its field at once, before any search.
    page.fill("input[name=chips]", "0")
    page.press("input[name=chips]", "Enter")
    page.wait_for_selector("label[data-field=chips] .refusal", timeout=20_000)
    assert page.locator("label[data-field=chips] .refusal").inner_text().startswith("error: --chips='0'")
    assert "chips=0" in page.url
    # The URL's state: the first answer comes back from its link (remembered: no waiting).
    page.goto(f"{server}/rainier?{query}", wait_until="load")
    assert page.locator("#results").get_attribute("data-state") == "ready"
    assert page.input_value("input[name=b_failure_scale]") == "3"
    assert len(chart_points(page, "#chart-b-goodput")) == len(goodput_b)
    tab.check()


def test_scenario_what_ifs_and_downloads(client: Any) -> None:
    base = client.get("/api/fleet", params={"scenario": "amazon-2025", "runs": "false"}).json()
    half = client.get("/api/fleet", params={"scenario": "amazon-2025", "runs": "false", "capex_scale": "0.5",
                                            "ai_share": "0.5", "capex_to_online_quarters": "0"}).json()
    assert half["overrides"] == {"capex_scale": 0.5, "ai_share": 0.5, "capex_to_online_quarters": 0}
    assert half["quarters"][0]["chips"] > 0 and half["quarters"][-1]["ai_capex_usd"] == pytest.approx(
        base["quarters"][3]["ai_capex_usd"] * 0.5 * 0.5 / 0.75)
    assert "overrides" not in client.get("/api/fleet", params={"scenario": "amazon-2025", "runs": "false",
                                                               "capex_scale": "1"}).json()
    for path, params, field in [("/api/fleet", {"scenario": "amazon-2025", "capex_scale": "0"}, "--capex-scale"),
                                ("/api/fleet", {"scenario": "amazon-2025", "power_envelope_w": "2GB"},
                                 "--power-envelope-w"),
                                ("/api/rainier", {"growth": "1M,lots"}, "--growth"),
                                ("/api/rainier", {"demand": "-1"}, "--demand"),
                                ("/api/rainier", {"recovery": "pray"}, "--recovery"),
                                ("/fleet/download.json", {"scenario": "nosuch"}, "fleet"),
                                ("/rainier/download.csv", {"slo_tpot": "0"}, "--slo-tpot")]:
        got = client.get(path, params=params)
        assert got.status_code == 422 and got.json()["field"] == field, (path, got.text)
    assert client.get("/fleet/download.xml", params={"scenario": "amazon-2025"}).status_code == 422
    csv_text = client.get("/fleet/download.csv", params={"scenario": "amazon-2025", "runs": "false"}).text
    assert csv_text.splitlines()[1].startswith("Amazon,2025Q1,")
    page = client.get("/fleet", params={"capex_scale": "-1"}).text
    assert "<span class='refusal' role='alert'>error: --capex-scale=&#x27;-1&#x27;" in page
    assert page.index("data-field='capex_scale'") < page.index("class='refusal'") < page.index("data-field='ai_share'")
