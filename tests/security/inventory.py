"""The routes a matrix covers, read from the OpenAPI document rather than listed by hand.

A route added to the app appears in ``/openapi.json`` and so in every matrix built from it; a route
that declares no ``x-tally-access`` cannot be placed in the scope matrix, and ``operations`` refuses
the document (the app refuses to start without one too: ``TallyRoute.__init__``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tally.api.routing import ACCESS_KEY, Access

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
METHODS = ("get", "put", "post", "patch", "delete")
KEYED = frozenset({Access.ROOT, Access.KEYS, Access.READ, Access.WRITE, Access.ADMIN})


@dataclass(frozen=True)
class Operation:
    """One method on one path, as the document describes it."""

    method: str  # upper case
    path: str  # a template: /v1/accounts/{account_id}
    operation_id: str
    access: Access
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    required_query: tuple[str, ...]
    has_body: bool
    body_fields: frozenset[str]  # the top-level properties of the request body's schema

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, ids: dict[str, str]) -> str:
        """The path with each parameter replaced by ``ids[name]`` (a ``KeyError`` names a new one)."""
        return self.path.format(**{name: ids[name] for name in self.path_params})


class UndeclaredAccess(AssertionError):
    """An operation says nothing of who may call it."""


def operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation of ``document``; ``UndeclaredAccess`` lists those without ``x-tally-access``."""
    found: list[Operation] = []
    undeclared: list[str] = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            if ACCESS_KEY not in operation:
                undeclared.append(f"{method.upper()} {path}")
                continue
            parameters = operation.get("parameters", [])
            query = [p for p in parameters if p["in"] == "query"]
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    operation_id=operation["operationId"],
                    access=Access(operation[ACCESS_KEY]),
                    path_params=tuple(p["name"] for p in parameters if p["in"] == "path"),
                    query_params=tuple(p["name"] for p in query),
                    required_query=tuple(p["name"] for p in query if p.get("required")),
                    has_body="requestBody" in operation,
                    body_fields=_body_fields(document, operation),
                )
            )
    if undeclared:
        raise UndeclaredAccess(f"operations without {ACCESS_KEY}: {undeclared}")
    return found


def _body_fields(document: dict[str, Any], operation: dict[str, Any]) -> frozenset[str]:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    schemas = [content.get("schema", {})]
    fields: set[str] = set()
    while schemas:
        schema = schemas.pop()
        if "$ref" in schema:
            name = schema["$ref"].removeprefix("#/components/schemas/")
            schema = document["components"]["schemas"][name]
        schemas += schema.get("anyOf", [])
        fields |= set(schema.get("properties", {}))
    return frozenset(fields)


def committed_operations() -> list[Operation]:
    """The operations of the committed ``docs/openapi.json`` (equal to the served one: test_openapi)."""
    document: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return operations(document)
