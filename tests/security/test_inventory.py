"""The matrices' own machinery refuses what it cannot place, so a new route or table is not skipped;
and every route the app serves is guarded, and in the OpenAPI document the matrices are made from."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tally.api.app import create_app
from tally.api.routing import Access, TallyRoute
from tally.bootstrap import Tally
from tests.security.examples import MissingExample, body_for, query_for
from tests.security.inventory import Operation, UndeclaredAccess, committed_operations, operations
from tests.security.snapshot import UnscopedTable, ledger_queries
from tests.support import settings_for

# Routes served but not in the OpenAPI document, so in no matrix: each says why it needs no key.
HIDDEN = {"/dashboard/assets/{name}": "the dashboard's script and style, which hold no data"}
FASTAPI_OWN = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect"})  # the public docs

DOCUMENT: dict[str, Any] = {
    "paths": {
        "/v1/things/{thing_id}": {
            "get": {"operationId": "get_thing", "x-tally-access": "read", "parameters": []},
            "post": {"operationId": "make_thing", "parameters": [], "requestBody": {}},
        }
    },
    "components": {"schemas": {}},
}


def test_an_operation_without_a_declared_access_fails_the_inventory() -> None:
    with pytest.raises(UndeclaredAccess, match=r"POST /v1/things/\{thing_id\}"):
        operations(DOCUMENT)


def test_a_new_write_route_without_an_example_body_fails_loudly() -> None:
    document = copy.deepcopy(DOCUMENT)
    document["paths"]["/v1/things/{thing_id}"]["post"]["x-tally-access"] = "write"
    made = next(o for o in operations(document) if o.method == "POST")
    with pytest.raises(MissingExample, match="make_thing"):
        body_for(made, {})


def test_a_required_query_parameter_without_an_example_fails_loudly() -> None:
    listing = Operation(
        method="GET",
        path="/v1/things",
        operation_id="list_things",
        access=Access.READ,
        path_params=(),
        query_params=("since",),
        required_query=("since",),
        has_body=False,
        body_fields=frozenset(),
    )
    with pytest.raises(MissingExample, match="since"):
        query_for(listing)


def test_every_committed_operation_can_be_called_by_the_matrices() -> None:
    for operation in committed_operations():
        body_for(operation, AnyIds())
        query_for(operation)


def test_every_table_is_tied_to_a_ledger_or_named_as_shared() -> None:
    queries = ledger_queries()
    assert queries["entries"].startswith("SELECT * FROM entries WHERE account_pk IN (SELECT pk FROM accounts")
    assert queries["ledgers"].endswith("WHERE id = ?")


def test_a_table_tied_to_no_ledger_fails_the_snapshot() -> None:
    with pytest.raises(UnscopedTable, match="jobs"):
        ledger_queries(shared={})


class AnyIds(dict[str, str]):
    """Ids for every placeholder name: the name itself."""

    def __missing__(self, key: str) -> str:
        return key


def _leaves(routes: list[Any]) -> list[Any]:
    """The routes that answer requests, through included routers and mounts."""
    found = []
    for route in routes:
        nested = getattr(getattr(route, "original_router", None), "routes", None)
        nested = nested if nested is not None else getattr(route, "routes", None)
        found += _leaves(nested) if nested is not None else [route]
    return found


def test_every_route_the_app_serves_is_guarded_and_in_the_document(tmp_path: Path) -> None:
    """A route outside the OpenAPI document is outside both matrices: it must be hidden on purpose
    and need no key; and every route is a ``TallyRoute``, so it declares and enforces its access."""
    app = create_app(Tally(settings_for(tmp_path)))
    documented = {(o.method, o.path) for o in operations(app.openapi())}
    leaves = [route for route in _leaves(app.routes) if route.path not in FASTAPI_OWN]
    assert len(leaves) >= len(documented), "the walk through the app's routers missed routes"
    for route in leaves:
        assert isinstance(route, TallyRoute), f"{route.path} is not a TallyRoute: nothing guards it"
        for method in (route.methods or set()) - {"HEAD"}:
            if (method, route.path) not in documented:
                assert route.path in HIDDEN, f"{method} {route.path} is in no matrix: document it"
                assert route.access in (Access.PUBLIC, Access.OPS, Access.OPS_PAGE), route.path
