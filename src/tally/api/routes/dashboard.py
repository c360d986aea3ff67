"""``GET /dashboard``: a live page over Tally's own metrics, and the JSON it polls.

The page is self-contained: its script and style are served from here (``api/static/``), and its
Content-Security-Policy lets it load nothing from anywhere else. It needs the ops token when
``TALLY_OPS_TOKEN`` is set, as a Bearer header or as ``?token=`` (``Access.OPS_PAGE``); the script
then sends the token as a header and takes it out of the address bar.
"""

from __future__ import annotations

import time
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from tally.api.replies import respond_json
from tally.api.routing import Access, TallyRoute, access
from tally.domain.errors import NotFound
from tally.observability.telemetry import Telemetry

router = APIRouter(route_class=TallyRoute, tags=["operations"])

_ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",  # the page may have been opened with ?token=
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@cache
def _static(name: str) -> bytes:
    return resources.files("tally.api").joinpath("static", name).read_bytes()


def _telemetry(request: Request) -> Telemetry:
    telemetry: Telemetry | None = request.app.state.tally.telemetry
    if telemetry is None:
        raise NotFound("Metrics are turned off (TALLY_METRICS_ENABLED=false); there is no dashboard.")
    return telemetry


@router.get("/dashboard", response_class=HTMLResponse, openapi_extra=access(Access.OPS_PAGE))
async def dashboard(request: Request) -> Response:
    """The live dashboard (HTML): request rate, error rate, P50/P99 per route, slowest statements."""
    _telemetry(request)
    return HTMLResponse(_static("dashboard.html"), headers=_PAGE_HEADERS)


@router.get("/dashboard/data", openapi_extra=access(Access.OPS_PAGE))
async def dashboard_data(request: Request) -> Response:
    """Cumulative metrics reshaped for the dashboard; the page derives rates from two of them."""
    data = await run_in_threadpool(_telemetry(request).dashboard, time.time())
    response = respond_json(200, data)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/dashboard/assets/{name}", include_in_schema=False, openapi_extra=access(Access.PUBLIC))
async def dashboard_asset(name: str) -> Response:
    """The page's script and style (no data in them, so no token)."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"No dashboard asset is called {name}.")
    return Response(_static(name), media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})
