"""The busiest route served past the framework's routing: ``POST /v1/transfers`` (ADR 0043).

With transfers coalesced into groups (ADR 0042), the ASGI path around a single transfer became the
largest part of its CPU. ``RequestContextMiddleware`` hands this route's requests to a shortcut
here instead of to Starlette's exception middleware, FastAPI's exit stacks, the router's matching
and FastAPI's dependency solving. What a request meets is otherwise the same, and the same code:

- the route's own checks and labels, ``TallyRoute.guarded`` (budget, authentication, scope, rate
  limit, body size and depth, headers);
- the body read as FastAPI reads it (``parse_body``: JSON only under a JSON content type, FastAPI's
  strict default; its error shapes for an empty body, invalid JSON and a failed validation);
- the route's endpoint function, and the app's exception handlers for what it raises.

The route stays declared in FastAPI: the OpenAPI document is unchanged, and the route is served
there if the shortcut is not installed (``TALLY_ROUTE_SHORTCUTS=false``).
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from tally.api.routes import transfers
from tally.api.routing import TallyRoute
from tally.api.schemas import TransferCreate

Shortcut = Callable[[Scope, Receive, Send], Awaitable[None]]
Model = TypeVar("Model", bound=BaseModel)
ErrorHandler = Callable[[Request, Any], Response | Awaitable[Response]]


def shortcuts(app: FastAPI) -> dict[tuple[str, str], Shortcut]:
    """The shortcuts for ``app``'s routes, by (method, path)."""
    route = _route(app, "POST", "/v1/transfers")
    return {("POST", route.path): _shortcut(app, route, TransferCreate, transfers.create_transfer)}


def parse_body(request: Request, body: bytes, adapter: TypeAdapter[Model]) -> Model:
    """``body`` as FastAPI parses and validates a route's one body model, with its error shapes."""
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    value: Any = body
    if _is_json(request.headers.get("content-type")):
        try:
            value = json.loads(body)
        except json.JSONDecodeError as error:
            where = ("body", error.pos)
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": where, "msg": "JSON decode error", "input": {}}]
            ) from error
        except Exception as error:  # not UTF-8, say: FastAPI answers 400 for a body it cannot decode
            raise HTTPException(status_code=400, detail="There was an error parsing the body") from error
    try:
        return adapter.validate_python(value, from_attributes=True)
    except ValidationError as error:
        found = [{**problem, "loc": ("body", *problem["loc"])} for problem in error.errors(include_url=False)]
        raise RequestValidationError(found) from None


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    if content_type == "application/json":  # what nearly every client sends: no parse needed
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    json_subtype = subtype == "json" or subtype.endswith("+json")
    return message.get_content_maintype() == "application" and json_subtype


def _route(app: FastAPI, method: str, path: str) -> TallyRoute:
    """The route declared for ``method`` ``path``, in the app's routers (included ones too: Tally
    includes its routers without a prefix, so a route's path is the one it was declared with)."""
    routes = list(app.routes)
    while routes:
        route = routes.pop(0)
        included = getattr(route, "original_router", None)  # FastAPI's wrapper of an included router
        if included is not None:
            routes.extend(included.routes)
        elif isinstance(route, TallyRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no {method} {path} route to shortcut")


def _shortcut(
    app: FastAPI,
    route: TallyRoute,
    model: type[Model],
    endpoint: Callable[[Model, Request], Awaitable[Response]],
) -> Shortcut:
    adapter = TypeAdapter(model)

    async def handle(request: Request) -> Response:
        return await endpoint(parse_body(request, await request.body(), adapter), request)

    guarded = route.guarded(handle)

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = route  # the access line and the metrics name the route, as FastAPI's match does
        scope.setdefault("path_params", {})
        request = Request(scope, receive)
        try:
            response = await guarded(request)
        except Exception as error:
            handler = _handler(app, error)
            if handler is None:
                raise  # RequestContextMiddleware answers 500, as for any route
            answer = handler(request, error)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    return serve


def _handler(app: FastAPI, error: Exception) -> ErrorHandler | None:
    """The app's exception handler for ``error``, found as Starlette finds it (by the error's MRO)."""
    for kind in type(error).__mro__:
        found = app.exception_handlers.get(kind)
        if found is not None:
            return found
    return None
