"""The matrices' own machinery refuses what it cannot place, so a new route or table is not skipped."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tally.api.routing import Access
from tests.security.examples import MissingExample, body_for, query_for
from tests.security.inventory import Operation, UndeclaredAccess, committed_operations, operations
from tests.security.snapshot import UnscopedTable, ledger_queries

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
