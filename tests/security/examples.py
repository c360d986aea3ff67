"""A minimal valid request for every operation: its body and required query, keyed by operationId.

Bodies name resources by placeholder (``"{account_id}"``), filled in from the resources of the
ledger under test, so the same table serves the scope matrix (the caller's own ledger) and the
isolation matrix (another ledger's ids). An operation that takes a body and has no example here
fails loudly: a new write route must say what a minimal call to it looks like.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.security.inventory import Operation

# Subscriptions made by the matrices only ever wait for expired holds, which no test here creates:
# nothing is ever sent to this (public, unreachable for the tests) address.
WEBHOOK_URL = "https://93.184.216.34/hooks/tally-matrix"
QUIET_EVENTS = ["transfer.expired"]

_ONE_TRANSFER = {"debit_account_id": "{world_id}", "credit_account_id": "{account_id}", "amount": 1}

BODIES: dict[str, Any] = {
    "open_account_v1_accounts_post": {"currency": "USD"},
    "change_account_v1_accounts__account_id__patch": {"name": "renamed by the matrix"},
    "create_ledger_v1_ledgers_post": {"name": "made by the matrix"},
    "create_key_v1_ledgers__ledger_id__keys_post": {"name": "made by the matrix", "scopes": ["read"]},
    "rotate_key_v1_ledgers__ledger_id__keys__key_id__rotate_post": {},
    "create_transfer_v1_transfers_post": _ONE_TRANSFER,
    "create_batch_v1_transfers_batch_post": {"transfers": [_ONE_TRANSFER], "atomic": True},
    "submit_batch_v1_transfer_batches_post": {"transfers": [_ONE_TRANSFER], "atomic": True},
    "post_hold_v1_transfers__transfer_id__post_post": {},
    "void_hold_v1_transfers__transfer_id__void_post": {},
    "reverse_transfer_v1_transfers__transfer_id__reverse_post": {"amount": 1},
    "create_webhook_v1_webhooks_post": {"url": WEBHOOK_URL, "event_types": QUIET_EVENTS},
}

# Values for required query parameters, by name.
QUERY: dict[str, str] = {"from": "2025-03-01", "to": "2025-03-02"}


class MissingExample(AssertionError):
    """An operation the tables above cannot call yet."""


def fill(template: Any, ids: dict[str, str]) -> Any:
    """``template`` with every ``"{name}"`` string replaced by ``ids[name]``."""
    if isinstance(template, dict):
        return {key: fill(value, ids) for key, value in template.items()}
    if isinstance(template, list):
        return [fill(value, ids) for value in template]
    if isinstance(template, str) and template.startswith("{") and template.endswith("}"):
        return ids[template[1:-1]]
    return template


def placeholders(template: Any) -> set[str]:
    """The names of the ``"{name}"`` strings in ``template``."""
    if isinstance(template, dict):
        return set().union(*(placeholders(value) for value in template.values()))
    if isinstance(template, list):
        return set().union(*(placeholders(value) for value in template))
    if isinstance(template, str) and template.startswith("{") and template.endswith("}"):
        return {template[1:-1]}
    return set()


def body_for(operation: Operation, ids: dict[str, str]) -> Any:
    """The JSON body to send, or ``None`` for an operation that takes none."""
    if not operation.has_body:
        return None
    if operation.operation_id not in BODIES:
        raise MissingExample(f"{operation} ({operation.operation_id}) takes a body: add one to BODIES")
    return fill(BODIES[operation.operation_id], ids)


def query_for(operation: Operation) -> dict[str, str]:
    missing = [name for name in operation.required_query if name not in QUERY]
    if missing:
        raise MissingExample(f"{operation} requires query {missing}: add them to QUERY")
    return {name: QUERY[name] for name in operation.required_query}


def headers_for(operation: Operation) -> dict[str, str]:
    """A fresh ``Idempotency-Key`` on every POST: required on some, optional on the others."""
    return {"Idempotency-Key": uuid.uuid4().hex} if operation.method == "POST" else {}
