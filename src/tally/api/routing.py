"""Who may call a route, declared on the route itself and enforced before the body is read.

Each route declares its ``Access`` (``openapi_extra={"x-tally-access": ...}`` through ``access()``).
``TallyRoute`` authenticates and authorises before FastAPI parses the body, so the API's error
precedence holds: authentication (401) → scope (403) → body and query validation. A route that
declares nothing refuses to start (``TallyRoute.__init__``).

Operations routes that show operational data (``/metrics``, ``/dashboard``) are ``OPS``: open while
``TALLY_OPS_TOKEN`` is unset, otherwise they need that token as ``Authorization: Bearer``, or, for
``OPS_PAGE`` (pages a browser opens from a link), as ``?token=``. Tokens are compared as SHA-256
digests with ``hmac.compare_digest``: constant time, and no length to learn.

A body that nests deeper than ``json_depth.MAX_JSON_DEPTH`` is refused (400 ``json_too_deep``) right
after the size check (413), before FastAPI parses it.

Keyed routes are rate limited per key (the root key counts as the key ``root``) right after
authorisation and before the body is looked at: authentication (401) → scope (403) → rate limit
(429) → body and query validation (ADR 0029). A refusal is 429 ``rate_limited`` with
``Retry-After`` and the ``RateLimit`` header of draft-ietf-httpapi-ratelimit-headers; every answer
of a keyed route carries the static ``RateLimit-Policy`` while limits are on. Operations routes and
problem pages need no key and are never limited.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from tally.api.json_depth import MAX_JSON_DEPTH, deeper_than
from tally.api.problems import render_error
from tally.api.replies import request_id, respond
from tally.cache.rate_limits import Decision, Policy, RateLimiter
from tally.domain.errors import (
    Forbidden,
    JsonTooDeep,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
    ValidationFailed,
)
from tally.domain.keys import Scope, effective_scopes
from tally.services.audit import ROOT_ACTOR, Actor
from tally.services.consistency import Consistency, ReadIntent, begin_reads
from tally.services.deadline import Deadline, set_deadline
from tally.services.ledgers import Principal
from tally.services.views import timestamp

ACCESS_KEY = "x-tally-access"
LONG_KEY = "x-tally-long"  # the route's budget maximum is TALLY_LONG_REQUEST_TIMEOUT_MS


class Access(StrEnum):
    PUBLIC = "public"  # no key (health, problem pages)
    ROOT = "root"  # the root key only
    KEYS = "keys"  # the root key, or an admin key of the ledger in the path
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    OPS = "ops"  # the ops token when one is set (metrics)
    OPS_PAGE = "ops_page"  # the same, also accepted as ?token= (the dashboard)


_KEYLESS = frozenset({Access.PUBLIC, Access.OPS, Access.OPS_PAGE})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # the ones whose body is parsed as JSON
_POLICY = '"default"'  # the name of the one quota policy in the RateLimit headers
_RATE_LIMITED_RESPONSE: dict[str, Any] = {
    "description": "Too many requests for this key (`rate_limited`); nothing was applied.",
    "headers": {
        "Retry-After": {
            "description": "Whole seconds (at least 1) to wait before a request of this key may pass.",
            "schema": {"type": "integer"},
        },
        "RateLimit": {
            "description": "What is left of the quota (draft-ietf-httpapi-ratelimit-headers): "
            '`"default";r=0;t=<seconds>`.',
            "schema": {"type": "string"},
        },
        "RateLimit-Policy": {
            "description": "The quota of each key, also sent on every answer of a keyed route while "
            'limits are on: `"default";q=<requests>;w=<seconds>`.',
            "schema": {"type": "string"},
        },
    },
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_SCOPE = {Access.READ: Scope.READ, Access.WRITE: Scope.WRITE, Access.ADMIN: Scope.ADMIN}
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def access(level: Access, *, long: bool = False) -> dict[str, Any]:
    """``openapi_extra`` for a route: its access level, the bearer requirement, its budget class.

    ``long`` routes (batches) may run up to ``TALLY_LONG_REQUEST_TIMEOUT_MS``; the others up to
    ``TALLY_REQUEST_TIMEOUT_MS`` (API.md's per-route maxima, ADR 0010).
    """
    extra: dict[str, Any] = {ACCESS_KEY: level.value}
    if long:
        extra[LONG_KEY] = True
    if level in (Access.OPS, Access.OPS_PAGE):
        extra["security"] = [{"bearer": []}, {}]  # the ops token, only when one is configured
    elif level is not Access.PUBLIC:
        extra["security"] = [{"bearer": []}]
        extra["responses"] = {"429": copy.deepcopy(_RATE_LIMITED_RESPONSE)}
    return extra


def principal(request: Request) -> Principal:
    found: Principal = request.state.principal
    return found


def actor(request: Request) -> Actor:
    """Who acts, for the audit trail: the calling key (``root`` for the root key) and the request id."""
    return Actor(principal(request).key_id or ROOT_ACTOR, request_id(request))


def ledger_of(request: Request) -> str:
    """The ledger of the calling key (routes inside a ledger)."""
    ledger_id = principal(request).ledger_id
    if ledger_id is None:  # TallyRoute refuses the root key on ledger routes before this
        raise Forbidden("The root key manages ledgers and keys only; use a ledger key.")
    return ledger_id


class TallyRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        declared = (kwargs.get("openapi_extra") or {}).get(ACCESS_KEY)
        if declared is None:
            raise TypeError(f"Route {path} declares no access level.")
        self.access = Access(declared)
        self.long = bool(kwargs["openapi_extra"].get(LONG_KEY))
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.guarded(super().get_route_handler())

    def guarded(self, handler: Handler) -> Handler:
        """``handler`` behind this route's checks: budget, authentication, scope, rate limit, body
        size and depth, headers; then the stale labels and the rate-limit policy on its answer."""
        level = self.access
        long = self.long

        async def guarded(request: Request) -> Response:
            # Fresh for every request: nothing of an earlier request's budget or reads carries over
            # (in process, an ASGI caller may run requests one after another in one context).
            # The budget runs from arrival, and authentication (a read on the primary) already
            # spends it; a malformed header is refused only after authentication (precedence).
            arrived = time.monotonic()
            limiter: RateLimiter | None = request.app.state.tally.rate_limiter
            budget_ms, malformed = (0, False) if level in _KEYLESS else _budget_ms(request, long)
            set_deadline(None if level in _KEYLESS else Deadline(arrived + budget_ms / 1000))
            origin = begin_reads(ReadIntent())
            if level in (Access.OPS, Access.OPS_PAGE):
                _check_ops_token(request, query=level is Access.OPS_PAGE)
            elif level is not Access.PUBLIC:
                who = await _authenticate(request)
                _authorise(who, level)
                request.state.principal = who
                request.state.ledger_id = who.ledger_id
                decision = await _rate_limit(limiter, who)
                if decision is not None and not decision.allowed:
                    return _refusal(request, decision)
            if request.scope["state"].get("body_too_large"):
                limit = request.app.state.tally.max_body_bytes
                raise PayloadTooLarge(f"The body exceeds {limit} bytes.")
            if request.method in _BODY_METHODS and deeper_than(await request.body()):
                raise JsonTooDeep(f"The body nests deeper than {MAX_JSON_DEPTH} levels.")
            if malformed:
                raise ValidationFailed.at(
                    ("header", "Tally-Timeout-Ms"), "Must be a positive integer number of milliseconds."
                )
            _refuse_nul(request)
            if level not in _KEYLESS:
                begin_reads(_read_intent(request), origin)
            response = await handler(request)
            if origin.as_of is not None:
                response.headers["Tally-Stale"] = "true"
                response.headers["Tally-As-Of"] = timestamp(origin.as_of) or ""
            if limiter is not None and level not in _KEYLESS:
                response.headers["RateLimit-Policy"] = _policy_header(limiter.policy)
            return response

        return guarded


async def _rate_limit(limiter: RateLimiter | None, who: Principal) -> Decision | None:
    """Count the request against its key's quota; ``None`` when rate limits are off."""
    if limiter is None:
        return None
    return await limiter.check(who.key_id or "root")


def _refuse_nul(request: Request) -> None:
    """A path or query parameter holding U+0000 (``%00``) is a 422, on every backend: PostgreSQL
    cannot compare text with it, and its driver's refusal must not read as a database outage."""
    given = [("path", name, str(value)) for name, value in request.path_params.items()]
    given += [("query", name, value) for name, value in request.query_params.multi_items()]
    for location, name, value in given:
        if "\x00" in value:
            raise ValidationFailed.at((location, name), "Must not contain U+0000 (NUL).")


def _policy_header(policy: Policy) -> str:
    return f"{_POLICY};q={policy.limit};w={policy.window}"


def _refusal(request: Request, decision: Decision) -> Response:
    """429 ``rate_limited`` with ``Retry-After`` (RFC 9110) and the RateLimit headers.

    The headers are the structured-field form of draft-ietf-httpapi-ratelimit-headers:
    ``RateLimit-Policy: "default";q=1000;w=1`` (the quota) and ``RateLimit: "default";r=0;t=1``
    (nothing remaining, ``t`` seconds until there is). Written here rather than by the app's error
    handler because they carry the decision.
    """
    wait = decision.retry_after or decision.policy.window
    error = RateLimited(
        f"This key may make {decision.policy.limit} requests per {decision.policy.window} s; "
        f"retry in {wait} s.",
        retry_after=wait,
    )
    headers = {
        "Retry-After": str(error.retry_after),
        "RateLimit-Policy": _policy_header(decision.policy),
        "RateLimit": f"{_POLICY};r={decision.remaining or 0};t={error.retry_after}",
    }
    return respond(render_error(error, request_id(request)), headers)


async def _authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if header is None:
        raise Unauthenticated("Send Authorization: Bearer <key>.")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthenticated("The Authorization header must be 'Bearer <key>'.")
    who: Principal = await request.app.state.tally.authenticator.authenticate(secret.strip())
    return who


def _check_ops_token(request: Request, *, query: bool) -> None:
    expected = request.app.state.tally.settings.ops_token
    if expected is None:
        return
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        given = request.query_params.get("token", "") if query else ""
    if not (given and _same_secret(given.strip(), expected.get_secret_value())):
        raise Unauthenticated("This route needs the ops token: Authorization: Bearer <TALLY_OPS_TOKEN>.")


def _same_secret(given: str, expected: str) -> bool:
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.encode()).digest(), digest(expected.encode()).digest())


def _authorise(who: Principal, level: Access) -> None:
    if level in (Access.ROOT, Access.KEYS):
        if who.is_root:
            return
        if level is Access.KEYS and who.key is not None and Scope.ADMIN in who.key.scopes:
            return  # which ledger it may touch is checked against the path by the route
        raise Forbidden("This route needs the root key or a ledger admin key.")
    if who.key is None:
        raise Forbidden("The root key manages ledgers and keys only; use a ledger key.")
    if _SCOPE[level] not in effective_scopes(who.key.scopes):
        raise Forbidden(f"This route needs the '{_SCOPE[level].value}' scope.")


def _budget_ms(request: Request, long: bool) -> tuple[int, bool]:
    """``min(Tally-Timeout-Ms, the route's maximum)``, and whether the header was malformed.

    Without a header, or with a malformed one, the route's maximum: a malformed header is refused
    only after authentication (error precedence), which already spends the budget.
    """
    settings = request.app.state.tally.settings
    cap_ms: int = settings.long_request_timeout_ms if long else settings.request_timeout_ms
    raw = request.headers.get("tally-timeout-ms")
    if raw is None:
        return cap_ms, False
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12 or int(raw) < 1:
        return cap_ms, True
    # A larger budget than the route allows is capped, not refused (API.md).
    return min(int(raw), cap_ms), False


_TOKEN = re.compile(r"^[0-9A-Fa-f/]{1,40}$")


def _read_intent(request: Request) -> ReadIntent:
    """``Tally-Consistency`` (``strong`` or ``available``, the default) and ``Tally-Consistency-Token``."""
    raw = request.headers.get("tally-consistency", Consistency.AVAILABLE.value)
    try:
        level = Consistency.from_header(raw)
    except ValueError:
        raise ValidationFailed.at(
            ("header", "Tally-Consistency"), "Must be 'strong' or 'available'."
        ) from None
    token = request.headers.get("tally-consistency-token")
    if token is not None and not _TOKEN.match(token.strip()):
        raise ValidationFailed.at(
            ("header", "Tally-Consistency-Token"), "Not a consistency token returned by this Tally."
        )
    return ReadIntent(level, token.strip() if token is not None else None)
