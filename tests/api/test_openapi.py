"""The committed OpenAPI document (docs/openapi.json) is the one the code serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tally.api.routing import ACCESS_KEY, Access

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


async def test_the_committed_openapi_document_matches_the_code(client: httpx.AsyncClient) -> None:
    served = (await client.get("/openapi.json")).json()
    committed = json.loads(DOCUMENT.read_text())
    assert served == committed, "docs/openapi.json is stale: run `make openapi` and commit it"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_every_operation_declares_who_may_call_it() -> None:
    document = json.loads(DOCUMENT.read_text())
    for method, path, operation in _operations(document):
        access = Access(operation[ACCESS_KEY])
        if access is Access.PUBLIC:
            assert "security" not in operation, (method, path)
        elif access in (Access.OPS, Access.OPS_PAGE):
            # The ops token is needed only when TALLY_OPS_TOKEN is set: an optional bearer.
            assert operation["security"] == [{"bearer": []}, {}], (method, path)
        else:
            assert operation["security"] == [{"bearer": []}], (method, path)


def test_every_operation_documents_problem_responses() -> None:
    document = json.loads(DOCUMENT.read_text())
    problem = {"$ref": "#/components/schemas/Problem"}
    for method, path, operation in _operations(document):
        for status in ("4XX", "5XX"):
            content = operation["responses"][status]["content"]
            assert content["application/problem+json"]["schema"] == problem, (method, path)
