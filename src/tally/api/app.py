"""The FastAPI app factory: routes, middleware, error handlers. Connects nothing itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException

from tally import __version__
from tally.api.middleware import RequestContextMiddleware
from tally.api.openapi_links import add_links
from tally.api.problems import BY_CODE, problem_body, render_error
from tally.api.replies import request_id, respond
from tally.api.routes import (
    accounts,
    audit,
    dashboard,
    events,
    ledgers,
    ops,
    transfer_batches,
    transfers,
    webhooks,
)
from tally.api.schemas import ProblemOut
from tally.api.shortcuts import shortcuts
from tally.config import Settings
from tally.domain import errors
from tally.observability.requests import RequestMetrics
from tally.services.ports import StoredReply


class Service(Protocol):
    """What the app needs from the composition root (``tally.bootstrap.Tally``)."""

    max_body_bytes: int
    settings: Settings
    request_observer: RequestMetrics | None  # None when metrics are off

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def create_app(tally: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await tally.start()
        try:
            yield
        finally:
            await tally.stop()

    app = FastAPI(
        title="Tally",
        version=__version__,
        description="A double-entry ledger: accounts, balances, transfers and holds.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.tally = tally
    for router in (
        ledgers.router,
        accounts.router,
        transfers.router,
        events.router,
        webhooks.router,
        audit.router,
        transfer_batches.router,
        ops.router,
        dashboard.router,
    ):
        app.include_router(router)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=tally.max_body_bytes,
        body_read_seconds=tally.settings.body_read_timeout_ms / 1000,
        observer=tally.request_observer,
        shortcuts=shortcuts(app) if tally.settings.route_shortcuts else None,
    )
    _install_error_handlers(app)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.TallyError)
    async def tally_error(request: Request, error: errors.TallyError) -> Response:
        headers: dict[str, str] = {}
        if isinstance(error, errors.Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(error, errors.IdempotencyKeyInUse | errors.Unavailable):
            headers["Retry-After"] = "1"
        return respond(render_error(error, request_id(request)), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _problem(request, "invalid_json", "The body is not valid JSON.")
        if any(p.get("type") == "missing" and tuple(p["loc"]) == ("body",) for p in problems):
            return _problem(request, "invalid_json", "The body is empty; send a JSON object.")
        field_errors = [
            {
                "loc": [str(part) if not isinstance(part, int) else part for part in p["loc"]],
                "msg": p["msg"],
            }
            for p in problems
        ]
        body = problem_body(
            BY_CODE["validation_error"],
            "The request is not valid.",
            request_id(request),
            field_errors,
        )
        return respond(StoredReply(422, body))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404:
            return _problem(request, "not_found", "No such route.")
        if error.status_code == 405:
            return _problem(request, "method_not_allowed", "This path does not take this method.")
        if error.status_code == 400:
            # FastAPI's answer to a body it could not decode (too deep, bad encoding).
            return _problem(request, "invalid_json", "The body could not be parsed as JSON.")
        return _problem(request, "internal_error", "Unexpected error.")


def _problem(request: Request, code: str, detail: str) -> Response:
    problem = BY_CODE[code]
    return respond(StoredReply(problem.status, problem_body(problem, detail, request_id(request))))


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the bearer scheme, problem+json error responses and links."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
    problem_schema = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = components.setdefault("schemas", {})
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    problem = {
        "description": "Problem details (RFC 9457)",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for path in schema["paths"].values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["4XX"] = problem
            responses["5XX"] = problem
    add_links(schema)
    app.openapi_schema = schema
    return schema
