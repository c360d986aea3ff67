"""Request limits: every string and list a client sends is bounded, and a body too deep is refused.

Invariants, in plain words:
- every string a request body or a query parameter can carry has a bound the OpenAPI document
  states (a maximum length, an anchored pattern with bounded repetition, an enum, a date or
  date-time format); every array in a body has a maximum number of items. The check walks the
  document generated from the routes, so a new field or route without a bound fails it;
- a body nested deeper than 64 levels is refused with 400 ``json_too_deep`` before it is parsed,
  after authentication and scope, and nothing is written; brackets inside strings are not nesting;
- every limit's problem code has its page under ``/problems/{code}``.

The limits of the connection itself (header size, slow headers and bodies) need a real server and
are in ``tests/integration/test_slow_clients.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tally.api.json_depth import MAX_JSON_DEPTH, deeper_than
from tally.bootstrap import build_app
from tally.config import Settings
from tests.support import LedgerKeys, assert_problem, idem

pytestmark = pytest.mark.backends("sqlite")  # limits are decided before any database work

# Free-form by design, bounded as a whole: metadata's size and depth are checked by its validator.
FREE_FORM = {"metadata"}
_BOUNDED_PATTERN = re.compile(r"^\^.*\$$")
_UNBOUNDED_REPEAT = re.compile(r"(?<!\\)[*+]|\{\d+,\}")
_BOUNDED_FORMATS = {"date", "date-time"}


def document() -> dict[str, Any]:
    # Python's collector thresholds: a serve process's own would stay set in this test process.
    app = build_app(Settings(database_url="sqlite://", log_format="json", gc_thresholds="python"))
    doc: dict[str, Any] = app.openapi()
    return doc


def _schemas(
    schema: dict[str, Any], components: dict[str, Any], where: str, seen: frozenset[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (location, schema) reachable from ``schema``, through refs, unions, items and properties."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            yield from _schemas(components[name], components, where, seen | {name})
        return
    yield where, schema
    for union in ("anyOf", "oneOf", "allOf"):
        for part in schema.get(union, []):
            yield from _schemas(part, components, where, seen)
    if "items" in schema:
        yield from _schemas(schema["items"], components, f"{where}[]", seen)
    for name, part in schema.get("properties", {}).items():
        if name not in FREE_FORM:
            yield from _schemas(part, components, f"{where}.{name}", seen)


def request_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    """What a client sends: every request body and every query and header parameter."""
    doc = document()
    components = doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                yield from _schemas(media["schema"], components, f"{method.upper()} {path} body", frozenset())
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "path":  # paths are bounded with the request line (431)
                    where = f"{method.upper()} {path} {parameter['in']}.{parameter['name']}"
                    yield from _schemas(parameter["schema"], components, where, frozenset())


def string_is_bounded(schema: dict[str, Any]) -> bool:
    if "maxLength" in schema or "enum" in schema or "const" in schema:
        return True
    if schema.get("format") in _BOUNDED_FORMATS:
        return True
    pattern = schema.get("pattern")
    return (
        pattern is not None
        and bool(_BOUNDED_PATTERN.match(pattern))
        and not _UNBOUNDED_REPEAT.search(pattern)
    )


def test_every_string_a_client_sends_has_a_documented_bound() -> None:
    found = list(request_schemas())
    strings = [(where, schema) for where, schema in found if schema.get("type") == "string"]
    assert len(strings) > 20, "the walk found too few strings: is it still reading the document?"
    unbounded = sorted({where for where, schema in strings if not string_is_bounded(schema)})
    assert unbounded == [], (
        "unbounded strings (give them max_length, a bounded pattern, or use schemas.Cursor for a "
        f"cursor; then list them in docs/limits.md): {unbounded}"
    )


def test_every_array_in_a_body_has_a_maximum_number_of_items() -> None:
    arrays = [(where, schema) for where, schema in request_schemas() if schema.get("type") == "array"]
    assert arrays
    unbounded = sorted({where for where, schema in arrays if "body" in where and "maxItems" not in schema})
    assert unbounded == [], f"arrays without maxItems: {unbounded}"


def test_free_form_objects_are_only_the_bounded_metadata() -> None:
    free = {
        where
        for where, schema in request_schemas()
        if schema.get("type") == "object" and schema.get("additionalProperties", False) not in (False, None)
    }
    assert free == set(), f"free-form objects other than metadata: {sorted(free)}"


def nested(depth: int, leaf: Any = 1) -> Any:
    """``depth`` levels of objects and arrays, alternating, around ``leaf``."""
    value = leaf
    for level in range(depth):
        value = {"n": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"1", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[{{{{", "b": [1]}', 2),  # brackets inside strings are text
        (b'{"a": "\\"[[[[", "b": [1]}', 2),  # an escaped quote does not end the string
        (b'{"a": "\\\\", "b": [[1]]}', 3),  # an escaped backslash does not escape the quote after it
        (b'["\\\\\\"[[", [[[]]]]', 4),
        (orjson.dumps(nested(MAX_JSON_DEPTH)), MAX_JSON_DEPTH),
    ],
)
def test_the_depth_is_measured_on_the_bytes_as_a_parser_would_see_it(body: bytes, depth: int) -> None:
    assert not deeper_than(body, depth)
    if depth > 0:
        assert deeper_than(body, depth - 1)


def test_the_depth_limit_is_what_the_problem_page_says() -> None:
    assert MAX_JSON_DEPTH == 64
    assert deeper_than(orjson.dumps(nested(MAX_JSON_DEPTH + 1)))
    assert not deeper_than(orjson.dumps(nested(MAX_JSON_DEPTH)))


async def accounts(client: httpx.AsyncClient, ledger: LedgerKeys) -> list[dict[str, Any]]:
    listed = await client.get("/v1/accounts", headers=ledger.read)
    assert listed.status_code == 200, listed.text
    data: list[dict[str, Any]] = listed.json()["data"]
    return data


async def post(client: httpx.AsyncClient, headers: dict[str, str], path: str, body: bytes) -> httpx.Response:
    sent = {**headers, **idem(), "Content-Type": "application/json"}
    return await client.post(path, content=body, headers=sent)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/accounts", {"currency": "USD", "metadata": {"deep": nested(MAX_JSON_DEPTH)}}),
        ("/v1/transfers", {"debit_account_id": "a", "credit_account_id": "b", "amount": 1, "x": nested(70)}),
        ("/v1/transfers/batch", {"transfers": [nested(MAX_JSON_DEPTH)], "atomic": True}),
    ],
)
async def test_a_body_nested_deeper_than_64_levels_gets_json_too_deep_and_nothing_is_written(
    client: httpx.AsyncClient, ledger: LedgerKeys, path: str, body: dict[str, Any]
) -> None:
    problem = assert_problem(await post(client, ledger.write, path, orjson.dumps(body)), 400, "json_too_deep")
    assert "64" in problem["detail"]
    assert await accounts(client, ledger) == []


async def test_a_pathological_body_of_a_mebibyte_of_brackets_gets_json_too_deep(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = b"[" * (512 * 1024) + b"]" * (512 * 1024)
    assert_problem(await post(client, ledger.write, "/v1/accounts", body), 400, "json_too_deep")


async def test_a_body_within_the_depth_limit_is_judged_on_its_fields(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    # 64 levels in all: past metadata's own 5 levels, so its field error answers, not json_too_deep.
    body = {"currency": "USD", "metadata": nested(MAX_JSON_DEPTH - 2, leaf={})}
    assert len(orjson.dumps(body)) < 1024
    errors = assert_problem(await post(client, ledger.write, "/v1/accounts", orjson.dumps(body)), 422)[
        "errors"
    ]
    assert [error["loc"] for error in errors] == [["body", "metadata"]]
    text = {"currency": "USD", "metadata": {"note": "[" * 1000}}
    created = await post(client, ledger.write, "/v1/accounts", orjson.dumps(text))
    assert created.status_code == 201, created.text


async def test_the_depth_is_judged_after_authentication_and_scope(
    client: httpx.AsyncClient, ledger: LedgerKeys
) -> None:
    body = orjson.dumps({"currency": "USD", "metadata": nested(100)})
    assert_problem(await post(client, {}, "/v1/accounts", body), 401, "unauthenticated")
    assert_problem(await post(client, ledger.read, "/v1/accounts", body), 403, "forbidden")


@pytest.mark.parametrize(
    "path", ["/v1/accounts", "/v1/transfers", "/v1/webhooks", "/v1/accounts/a/entries", "KEYS"]
)
async def test_a_cursor_longer_than_any_cursor_tally_hands_out_is_refused(
    client: httpx.AsyncClient, ledger: LedgerKeys, path: str
) -> None:
    path = f"/v1/ledgers/{ledger.ledger_id}/keys" if path == "KEYS" else path
    response = await client.get(path, params={"cursor": "c" * 65}, headers=ledger.admin)
    errors = assert_problem(response, 422, "validation_error")["errors"]
    assert ["query", "cursor"] in [error["loc"] for error in errors]


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("payload_too_large", 413),
        ("json_too_deep", 400),
        ("headers_too_large", 431),
        ("request_timeout", 408),
        ("validation_error", 422),
    ],
)
async def test_every_limit_has_a_problem_page(client: httpx.AsyncClient, code: str, status: int) -> None:
    page = await client.get(f"/problems/{code}")
    assert page.status_code == 200
    assert f"HTTP status {status}" in page.text
