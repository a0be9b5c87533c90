"""The web planner: /api/<question> answers what the CLI's --json prints, refuses bad input
with HTTP 422 and the one-line refusal, takes no file paths; the pages render (in Debian's
Chromium, offline: every request off 127.0.0.1 is refused) with no console errors."""

from __future__ import annotations

import json
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


def test_training_page_in_chromium(server: str) -> None:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            blocked: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))

            def route(request_route: Any) -> None:
                if request_route.request.url.startswith(server):
                    request_route.continue_()
                else:
                    blocked.append(request_route.request.url)
                    request_route.abort()

            page.route("**/*", route)
            page.goto(f"{server}/train?model=llama3-8b&system=dgx-h100&chips=64&seq=4096&global_batch=256&top=5",
                      wait_until="load")
            page.wait_for_selector("svg.main-svg", timeout=20_000)
            assert page.locator("#plans tr").count() == 6  # header and five plans
            assert "clusterplan train --model llama3-8b" in page.locator("#command").inner_text()
            assert page.locator("#time tr").count() > 1 and page.locator("#memory tr").count() > 1
            page.fill("input[name=chips]", "-3")
            page.click("button[type=submit]")
            page.wait_for_selector(".refusal", timeout=20_000)
            assert "--chips" in page.locator(".refusal").inner_text()
            assert "chips=-3" in page.url  # the state is in the URL
            assert errors == [] and blocked == []
        finally:
            browser.close()
