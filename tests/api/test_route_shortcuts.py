"""``POST /v1/transfers`` served by its shortcut (``api.shortcuts``, ADR 0043) answers as FastAPI did.

The shortcut skips FastAPI's routing and dependency solving for the busiest route, so everything
the framework did for it must still happen: the same checks in the same order, the same parsing of
the body, the same problems. One script of requests, good and bad, is sent to a service with the
shortcut and to one without; every answer must be the same (status, content type, body with the
run's own ids and times masked, and the headers a client reads), and the shortcut must have served
the first service's requests and none of the second's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tally.api import shortcuts
from tally.bootstrap import Tally
from tests.support import (
    ROOT,
    LedgerKeys,
    funded_account,
    new_ledger,
    open_account,
    serving_in_process,
    settings_for,
)

JSON = {"content-type": "application/json"}
Step = tuple[str, str, dict[str, str], bytes]  # (who: write/read/none/root, query, headers, body)


def _json(**body: Any) -> bytes:
    return orjson.dumps(body)


def _move(amount: Any = 30, **extra: Any) -> bytes:
    return _json(**{"debit_account_id": "wallet", "credit_account_id": "shop", "amount": amount, **extra})


SCRIPT: list[Step] = [
    ("write", "", {**JSON, "Idempotency-Key": "k-1"}, _move()),
    ("write", "", {**JSON, "Idempotency-Key": "k-1"}, _move()),  # a replay
    ("write", "", {**JSON, "Idempotency-Key": "k-1"}, _move(31)),  # the key with another body
    ("write", "", {**JSON, "Idempotency-Key": "k-2"}, _move(10_000)),  # insufficient funds
    ("write", "", {**JSON, "Idempotency-Key": "k-3"}, _move(5, id="client-1")),
    ("write", "", {**JSON, "Idempotency-Key": "k-4"}, _move(5, id="client-1")),  # exists: 200
    ("write", "", {**JSON, "Idempotency-Key": "k-5"}, _move(1, credit_account_id="nobody")),
    ("write", "", {**JSON, "Idempotency-Key": "k-6"}, _move(1, pending=True)),
    ("write", "", {**JSON, "Idempotency-Key": "k-7"}, _move(1, legs=[])),  # both forms
    ("write", "", {**JSON, "Idempotency-Key": "k-8"}, _move("ten")),
    ("write", "", {**JSON, "Idempotency-Key": "k-9"}, _move(0)),
    ("write", "", {**JSON, "Idempotency-Key": "k-10"}, _json(amount=1)),
    ("write", "", {**JSON, "Idempotency-Key": "k-11"}, _move(1, unknown="x")),
    ("write", "", {**JSON, "Idempotency-Key": "k-12"}, _move(1, debit_account_id="shop")),  # same account
    ("write", "", {**JSON, "Idempotency-Key": "k-13"}, b'{"amount": 1,'),  # not JSON
    ("write", "", {**JSON, "Idempotency-Key": "k-14"}, b"[1, 2]"),  # JSON, not an object
    ("write", "", {**JSON, "Idempotency-Key": "k-15"}, b""),  # no body
    ("write", "", {**JSON, "Idempotency-Key": "k-16"}, b'{"amount": "\xff"}'),  # not UTF-8
    ("write", "", {**JSON, "Idempotency-Key": "k-17"}, b"[" * 100 + b"]" * 100),  # too deep
    ("write", "", {"Idempotency-Key": "k-18"}, _move(2)),  # no content type
    ("write", "", {"content-type": "text/plain", "Idempotency-Key": "k-19"}, _move(2)),
    ("write", "", {"content-type": "application/vnd.x+json", "Idempotency-Key": "k-20"}, _move(2)),
    ("write", "", JSON, _move(2)),  # no Idempotency-Key
    ("write", "", {**JSON, "Idempotency-Key": "\x01"}, _move(2)),
    ("write", "", {**JSON, "Idempotency-Key": "k-21", "Tally-Timeout-Ms": "soon"}, _move(2)),
    ("write", "", {**JSON, "Idempotency-Key": "k-22", "Tally-Consistency": "eventually"}, _move(2)),
    ("write", "?note=%00", {**JSON, "Idempotency-Key": "k-23"}, _move(2)),
    ("write", "", {**JSON, "Idempotency-Key": "k-24", "Tally-Timeout-Ms": "60000"}, _move(2)),
    ("read", "", {**JSON, "Idempotency-Key": "k-25"}, _move(2)),  # the read scope: 403
    ("root", "", {**JSON, "Idempotency-Key": "k-26"}, _move(2)),  # the root key: no ledger
    ("none", "", {**JSON, "Idempotency-Key": "k-27"}, _move(2)),  # no key: 401
    ("none", "", {**JSON, "Authorization": "Basic eA==", "Idempotency-Key": "k-28"}, _move(2)),
]
READ_HEADERS = ("content-type", "idempotent-replayed", "www-authenticate", "retry-after", "ratelimit-policy")
MADE_BY_THE_RUN = {"id", "created_at", "posted_at", "updated_at", "request_id", "as_of", "instance"}


@asynccontextmanager
async def _service(directory: Path, *, shortcut: bool) -> AsyncIterator[tuple[httpx.AsyncClient, LedgerKeys]]:
    tally = Tally(settings_for(directory, route_shortcuts=shortcut))
    async with serving_in_process(tally, tokens=False) as client:
        keys = await new_ledger(client, "main")
        await funded_account(client, keys, "wallet", 110)
        await open_account(client, keys.write, id="shop")
        yield client, keys


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: "*" if name in MADE_BY_THE_RUN else _masked(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


async def _answers(client: httpx.AsyncClient, keys: LedgerKeys) -> list[dict[str, Any]]:
    who = {"write": keys.write, "read": keys.read, "root": ROOT, "none": {}}
    answers = []
    for role, query, headers, body in SCRIPT:
        response = await client.post(f"/v1/transfers{query}", content=body, headers={**who[role], **headers})
        answers.append(
            {
                "status": response.status_code,
                "headers": {name: response.headers.get(name) for name in READ_HEADERS},
                "body": _masked(response.json()),
                "request_id": response.headers.get("x-request-id") is not None,
                "token": response.headers.get("tally-consistency-token") is not None,
            }
        )
    return answers


async def test_the_shortcut_answers_every_request_as_fastapi_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    parse_body = shortcuts.parse_body

    def counted(request: Any, body: bytes, adapter: Any) -> Any:
        parsed.append(body)
        return parse_body(request, body, adapter)

    monkeypatch.setattr(shortcuts, "parse_body", counted)

    async with _service(tmp_path / "framework", shortcut=False) as (client, keys):
        by_framework = await _answers(client, keys)
    assert parsed == []

    async with _service(tmp_path / "shortcut", shortcut=True) as (client, keys):
        by_shortcut = await _answers(client, keys)
    assert len(parsed) > len(SCRIPT) // 2  # the funding transfer and every request that got past the checks

    for step, framework, shortcut in zip(SCRIPT, by_framework, by_shortcut, strict=True):
        assert shortcut == framework, step
    statuses = {answer["status"] for answer in by_shortcut}
    assert {200, 201, 400, 401, 403, 422} <= statuses  # the script reaches every kind of answer


async def test_the_access_line_and_metrics_name_the_route_the_shortcut_served(tmp_path: Path) -> None:
    async with _service(tmp_path, shortcut=True) as (client, keys):
        moved = await client.post(
            "/v1/transfers", content=_move(1), headers={**keys.write, **JSON, "Idempotency-Key": "k"}
        )
        assert moved.status_code == 201, moved.text
        metrics = (await client.get("/metrics")).text
    served = [
        line
        for line in metrics.splitlines()
        if line.startswith("tally_http_requests_total{") and 'route="/v1/transfers"' in line
    ]
    assert served, metrics
