"""Turning outcomes into HTTP responses, and requests into idempotency keys and fingerprints."""

from __future__ import annotations

import hashlib
import re
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar, overload

import orjson
from fastapi import Request, Response
from pydantic import BaseModel

from tally.api.problems import render_error
from tally.domain.errors import IdempotencyKeyRequired, TallyError, ValidationFailed
from tally.services.idempotency import IdempotencyKey, Outcome
from tally.services.ports import Page, StoredReply, Transaction
from tally.services.views import json_reply

T = TypeVar("T")
_IDEMPOTENCY_KEY = re.compile(r"^[\x20-\x7e]{1,255}$")
_CURSOR = re.compile(r"^p(\d{1,19})$")


def respond(reply: StoredReply, headers: dict[str, str] | None = None) -> Response:
    media = "application/problem+json" if reply.status >= 400 else "application/json"
    return Response(reply.body, status_code=reply.status, media_type=media, headers=headers)


def respond_json(status: int, data: Any) -> Response:
    return respond(json_reply(status, data))


def respond_outcome(request: Request, outcome: Outcome) -> Response:
    headers = {"Tally-Consistency-Token": request.app.state.tally.database.position()}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return respond(outcome.reply, headers)


def request_id(request: Request) -> str | None:
    found: str | None = request.scope.get("state", {}).get("request_id")
    return found


async def canonical_body(request: Request) -> bytes:
    body = await request.body()
    return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""


@overload
async def idempotency_key(request: Request, *, required: Literal[True]) -> IdempotencyKey: ...
@overload
async def idempotency_key(request: Request, *, required: bool) -> IdempotencyKey | None: ...


async def idempotency_key(request: Request, *, required: bool) -> IdempotencyKey | None:
    """The request's key and fingerprint (method + path + canonical JSON body)."""
    raw = request.headers.get("idempotency-key")
    if raw is None:
        if required:
            raise IdempotencyKeyRequired("Send an Idempotency-Key header with this request.")
        return None
    if _IDEMPOTENCY_KEY.fullmatch(raw) is None:
        raise ValidationFailed.at(("header", "Idempotency-Key"), "Must be 1-255 printable ASCII characters.")
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b" ")
    digest.update(_url_path(request).encode())
    digest.update(b"\n")
    digest.update(await canonical_body(request))
    return IdempotencyKey(raw, digest.digest())


def _url_path(request: Request) -> str:
    """``request.url.path`` (as fingerprints have always held it) without building the whole URL."""
    path: str = request.scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def request_hash(model: BaseModel) -> bytes:
    """What a create with a client id is compared by: the body as understood, defaults included."""
    return hashlib.sha256(orjson.dumps(model.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).digest()


def rejecter(request: Request) -> Callable[[TallyError], StoredReply]:
    rid = request_id(request)
    return lambda rejection: render_error(rejection, rid)


async def run_write(
    request: Request,
    ledger_id: str,
    action: Callable[[Transaction], Awaitable[StoredReply]],
    *,
    key_required: bool,
) -> Outcome:
    """Run ``action`` through the idempotent executor with the request's key (if any)."""
    key = await idempotency_key(request, required=key_required)
    outcome: Outcome = await request.app.state.tally.executor.run(ledger_id, key, action, rejecter(request))
    return outcome


def encode_cursor(position: int | None) -> str | None:
    if position is None:
        return None
    return urlsafe_b64encode(f"p{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise ValidationFailed.at(("query", "cursor"), "Unknown cursor.")
    return int(match.group(1))


def page_reply(page: Page[T], view: Callable[[T], Any]) -> Response:
    data = [view(item) for item in page.items]
    return respond_json(200, {"data": data, "next_cursor": encode_cursor(page.next_after)})
