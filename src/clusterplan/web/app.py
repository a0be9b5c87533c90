"""The FastAPI application: ``/api/<question>`` (GET with query parameters, POST with a JSON
object) answering exactly what the CLI's ``--json`` prints; ``/docs`` lists the endpoints and
their request schemas (served here: no assets from a CDN); the pages of ``web/pages.py``."""

from __future__ import annotations

import html
import json
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from clusterplan.errors import NoAnswerError, SpecError
from clusterplan.web import pages, scenarios
from clusterplan.web.api import CLI_ONLY, QUESTIONS, ask, refusal


@cache
def plotly_js() -> str:
    """plotly.js from the installed plotly package (served locally, never from a CDN)."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def create_app() -> FastAPI:
    """The web planner's application."""
    app = FastAPI(title="clusterplan", description="Plan and simulate AI supercomputers",
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")

    @app.exception_handler(SpecError)
    async def refused(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, SpecError)
        # A valid question answered no (no plan fits, none meets the deadline) is 409; bad input 422.
        status = 409 if isinstance(error, NoAnswerError) else 422
        return JSONResponse(refusal(error), status_code=status)

    async def _answer(kind: str, data: dict[str, Any]) -> Response:
        answer = ask(kind, data)
        return Response(answer.to_json(), media_type="application/json")

    for kind in QUESTIONS:
        def make(kind: str = kind) -> None:
            async def get(request: Request) -> Response:
                return await _answer(kind, dict(request.query_params))

            async def post(request: Request) -> Response:
                try:
                    data = await request.json()
                except ValueError:
                    raise SpecError("body", "(not JSON)", "must be one JSON object of request fields") from None
                if not isinstance(data, dict):
                    raise SpecError("body", data, "must be one JSON object of request fields")
                return await _answer(kind, data)

            summary = QUESTIONS[kind].summary
            app.add_api_route(f"/api/{kind}", get, methods=["GET"], summary=summary, name=f"{kind}_get")
            app.add_api_route(f"/api/{kind}", post, methods=["POST"], summary=summary, name=f"{kind}_post")

        make()

    @app.get("/docs", response_class=HTMLResponse)
    async def docs() -> str:
        return docs_page()

    @app.get("/static/plotly.min.js")
    async def plotly() -> Response:
        return Response(plotly_js(), media_type="application/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return pages.index_page()

    @app.get("/train", response_class=HTMLResponse)
    async def training(request: Request) -> str:
        return pages.training_page(dict(request.query_params))

    @app.get("/serve", response_class=HTMLResponse)
    async def serving(request: Request) -> str:
        return pages.serving_page(dict(request.query_params))

    @app.get("/failures", response_class=HTMLResponse)
    async def failures(request: Request) -> str:
        return pages.failures_page(dict(request.query_params))

    for page in scenarios.PAGES.values():
        def scenario_routes(page: scenarios.ScenarioPage = page) -> None:
            kind = page.kind

            def whole(request: Request) -> HTMLResponse:  # sync: FastAPI runs it off the event loop
                return HTMLResponse(scenarios.scenario_page(page, dict(request.query_params)))

            def partial(request: Request) -> Response:
                return Response(scenarios.results_json(page, dict(request.query_params)),
                                media_type="application/json")

            def streamed(request: Request) -> StreamingResponse:
                return StreamingResponse(scenarios.stream(page, dict(request.query_params)),
                                         media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

            def download(request: Request, ext: str) -> Response:
                if ext not in ("json", "csv", "html"):
                    raise SpecError("download", ext, "must be download.json, download.csv or download.html")
                text, media, filename = scenarios.download(kind, dict(request.query_params), ext)
                return Response(text, media_type=media,
                                headers={"Content-Disposition": f"attachment; filename=\"{filename}\""})

            app.add_api_route(f"/{kind}", whole, methods=["GET"], response_class=HTMLResponse,
                              include_in_schema=False, name=f"{kind}_page")
            app.add_api_route(f"/{kind}/results", partial, methods=["GET"], include_in_schema=False,
                              name=f"{kind}_results")
            app.add_api_route(f"/{kind}/stream", streamed, methods=["GET"], include_in_schema=False,
                              name=f"{kind}_stream")
            app.add_api_route(f"/{kind}/download.{{ext}}", download, methods=["GET"], include_in_schema=False,
                              name=f"{kind}_download")

        scenario_routes()

    return app


def docs_page() -> str:
    """Every /api endpoint with its request schema (fields, types, defaults), server-rendered."""
    sections = []
    for kind, question in QUESTIONS.items():
        schema = question.request.model_json_schema()
        rows = []
        for name, field in schema.get("properties", {}).items():
            if name in CLI_ONLY:
                continue
            kind_text = field.get("type") or " | ".join(str(option.get("type", option.get("$ref", "")))
                                                       for option in field.get("anyOf", []))
            default = json.dumps(field.get("default")) if "default" in field else "required"
            rows.append(f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(str(kind_text))}</td>"
                        f"<td>{html.escape(default)}</td><td>{html.escape(field.get('description', ''))}</td></tr>")
        sections.append(
            f"<section><h2><code>GET|POST /api/{kind}</code></h2><p>{html.escape(question.summary)}. "
            f"{html.escape(question.request.__doc__ or '')}</p><table><tr><th>field</th><th>type</th>"
            f"<th>default</th><th>meaning</th></tr>{''.join(rows)}</table></section>")
    note = ("<p>Query parameters (GET) or one JSON object (POST) with these names; the CLI's spellings work "
            "too (<code>seq</code>, <code>global_batch</code>, <code>demand</code>, <code>slo_ttft</code>), "
            "and Plan fields (<code>tp</code>, <code>pp</code>, <code>zero</code>, ...) go at the top level "
            "or under <code>plan</code>. The answer is exactly what <code>clusterplan &lt;command&gt; --json"
            "</code> prints. Bad input: HTTP 422 with <code>{field, value, rule, message}</code>; a valid "
            "question answered no (no plan fits): HTTP 409, the same shape. Machine-readable: "
            "<a href='/openapi.json'>/openapi.json</a>.</p>")
    return pages.layout("API", note + "".join(sections))
