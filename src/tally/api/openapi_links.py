"""OpenAPI links (OpenAPI 3.1 §4.8.20) from the operations that create a resource to those that use it.

A link tells a client, and a stateful fuzzer, where the id in a create's answer goes next: the
``id`` of ``POST /v1/accounts``'s 201 is the ``account_id`` of ``GET /v1/accounts/{account_id}``.
They are added to the generated document in one place, after FastAPI has built it, rather than in
each route's decorator, so that the whole map of create → use reads in one table. Operations are
named by method and path; ``add_links`` raises ``KeyError`` if one is missing, so a renamed route
fails the document's drift test instead of leaving a link to nowhere.
"""

from __future__ import annotations

from typing import Any, NamedTuple

_RESPONSE_ID = "$response.body#/id"


class Link(NamedTuple):
    """A link named ``name`` from the ``status`` answer of one operation to ``target``'s operation."""

    name: str
    target: tuple[str, str]  # (method, path)
    parameters: dict[str, str]  # target parameter → runtime expression


def _ids(parameter: str, targets: dict[str, tuple[str, str]], **extra: str) -> list[Link]:
    return [Link(name, target, {parameter: _RESPONSE_ID, **extra}) for name, target in targets.items()]


_ACCOUNT = "/v1/accounts/{account_id}"
_TRANSFER = "/v1/transfers/{transfer_id}"
_KEY = "/v1/ledgers/{ledger_id}/keys/{key_id}"
_WEBHOOK = "/v1/webhooks/{webhook_id}"

LINKS: dict[tuple[str, str, str], list[Link]] = {
    ("post", "/v1/ledgers", "201"): _ids(
        "ledger_id",
        {
            "CreateKey": ("post", "/v1/ledgers/{ledger_id}/keys"),
            "ListKeys": ("get", "/v1/ledgers/{ledger_id}/keys"),
        },
    ),
    ("post", "/v1/ledgers/{ledger_id}/keys", "201"): _ids(
        "key_id",
        {
            "RevokeKey": ("delete", _KEY),
            "RotateKey": ("post", f"{_KEY}/rotate"),
            "GetKeyUsage": ("get", f"{_KEY}/usage"),
        },
        ledger_id="$request.path.ledger_id",
    ),
    ("post", "/v1/accounts", "201"): _ids(
        "account_id",
        {
            "GetAccount": ("get", _ACCOUNT),
            "ChangeAccount": ("patch", _ACCOUNT),
            "GetBalance": ("get", f"{_ACCOUNT}/balance"),
            "ListEntries": ("get", f"{_ACCOUNT}/entries"),
            "ListStatements": ("get", f"{_ACCOUNT}/statements"),
        },
    ),
    ("post", "/v1/transfers", "201"): _ids(
        "transfer_id",
        {
            "GetTransfer": ("get", _TRANSFER),
            "PostHold": ("post", f"{_TRANSFER}/post"),
            "VoidHold": ("post", f"{_TRANSFER}/void"),
            "ReverseTransfer": ("post", f"{_TRANSFER}/reverse"),
        },
    ),
    ("post", "/v1/webhooks", "201"): _ids(
        "webhook_id",
        {
            "DeleteWebhook": ("delete", _WEBHOOK),
            "ListDeliveries": ("get", f"{_WEBHOOK}/deliveries"),
            "Redrive": ("post", f"{_WEBHOOK}/redrive"),
        },
    ),
    ("post", "/v1/transfer-batches", "202"): _ids(
        "batch_id", {"GetTransferBatch": ("get", "/v1/transfer-batches/{batch_id}")}
    ),
}


def add_links(document: dict[str, Any]) -> None:
    """Add ``LINKS`` to the responses of ``document`` (in place), by the targets' ``operationId``."""
    paths = document["paths"]
    for (method, path, status), links in LINKS.items():
        response = paths[path][method]["responses"][status]
        response["links"] = {
            link.name: {
                "operationId": paths[link.target[1]][link.target[0]]["operationId"],
                "parameters": link.parameters,
            }
            for link in links
        }
