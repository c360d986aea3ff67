"""Operations: liveness, readiness, metrics and the problem pages. No key needed.

``/metrics`` needs the ops token when ``TALLY_OPS_TOKEN`` is set (``Access.OPS``).
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from tally.api.problems import BY_CODE
from tally.api.replies import respond_json
from tally.api.routing import Access, TallyRoute, access
from tally.domain.errors import NotFound

router = APIRouter(route_class=TallyRoute, tags=["operations"])


@router.get("/healthz", openapi_extra=access(Access.PUBLIC))
async def healthz() -> Response:
    """The process is alive."""
    return respond_json(200, {"status": "ok"})


@router.get("/readyz", openapi_extra=access(Access.PUBLIC))
async def readyz(request: Request) -> Response:
    """200 when every dependency answers; the body lists each one as ``ok|degraded|down``."""
    checks = await request.app.state.tally.readiness()
    ready = all(state != "down" for state in checks.values())
    return respond_json(
        200 if ready else 503, {"status": "ready" if ready else "not_ready", "checks": checks}
    )


@router.get("/metrics", response_class=PlainTextResponse, openapi_extra=access(Access.OPS))
async def metrics(request: Request) -> Response:
    """Prometheus text format: request, statement, pool and business metrics, summed over workers.

    Labels carry route templates and statement shapes, never ids or values. 404 when
    ``TALLY_METRICS_ENABLED=false``.
    """
    telemetry = request.app.state.tally.telemetry
    if telemetry is None:
        raise NotFound("Metrics are turned off (TALLY_METRICS_ENABLED=false).")
    # In multi-process mode this reads every worker's files: off the event loop.
    body: bytes = await run_in_threadpool(telemetry.exposition)
    return Response(body, media_type=telemetry.content_type, headers={"Cache-Control": "no-store"})


@router.get("/problems/{code}", response_class=HTMLResponse, openapi_extra=access(Access.PUBLIC))
async def problem_page(code: str) -> Response:
    """A short page explaining a problem ``code`` and what to do about it."""
    problem = BY_CODE.get(code)
    if problem is None:
        raise NotFound(f"No problem is called {code}.")
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(problem.title)}</title>"
        f"<h1>{html.escape(problem.title)}</h1>"
        f"<p>Code <code>{problem.code}</code>, HTTP status {problem.status}.</p>"
        f"<p>{html.escape(problem.advice)}</p></html>"
    )
    return HTMLResponse(page)
