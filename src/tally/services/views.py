"""The wire shape of each resource, shared by HTTP responses and outbox events.

Timestamps are RFC 3339 UTC with microseconds (``2026-11-29T20:06:24.123456Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from tally.domain.accounts import Account, Direction
from tally.domain.keys import ApiKey, Ledger
from tally.domain.transfers import Transfer
from tally.services.ports import Entry, Event, StoredReply

JsonObject = dict[str, Any]


def json_reply(status: int, data: Any) -> StoredReply:
    """A reply of ``data`` as JSON, as an idempotency record keeps it."""
    return StoredReply(status, orjson.dumps(data))


def timestamp(value: datetime | None) -> str | None:
    return None if value is None else _rfc3339(value)


@lru_cache(maxsize=4096)  # a transfer's times are its transaction's: a batch's thousand share one
def _rfc3339(value: datetime) -> str:
    # isoformat, not strftime("%Y"): glibc writes the year 250 as "250", and RFC 3339 needs four digits.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def ledger_view(ledger: Ledger) -> JsonObject:
    return {"id": ledger.id, "name": ledger.name, "created_at": timestamp(ledger.created_at)}


def key_view(key: ApiKey) -> JsonObject:
    return {
        "id": key.id,
        "name": key.name,
        "scopes": sorted(scope.value for scope in key.scopes),
        "created_at": timestamp(key.created_at),
        "revoked_at": timestamp(key.revoked_at),
        "last_used_at": timestamp(key.last_used_at),
        "expires_at": timestamp(key.expires_at),
    }


def account_view(account: Account) -> JsonObject:
    balance = account.balance
    return {
        "id": account.id,
        "name": account.name,
        "currency": account.currency,
        "normal_balance": account.normal_balance.value,
        "min_balance": account.bounds.min_balance,
        "max_balance": account.bounds.max_balance,
        "status": account.status.value,
        "metadata": account.metadata,
        "version": account.version,
        "balance": {
            "posted": balance.posted,
            "pending_debits": balance.pending_debits,
            "pending_credits": balance.pending_credits,
            "available": account.available,
        },
        "created_at": timestamp(account.created_at),
        "updated_at": timestamp(account.updated_at),
    }


def transfer_view(transfer: Transfer) -> JsonObject:
    view: JsonObject = {
        "id": transfer.id,
        "status": transfer.status.value,
        "legs": [
            {
                "account_id": leg.account_id,
                "direction": leg.direction.value,
                "amount": leg.amount,
                "currency": leg.currency,
            }
            for leg in transfer.legs
        ],
    }
    if transfer.is_simple:  # a two-leg transfer also reads in the simple form
        first, second = transfer.legs
        debit, credit = (first, second) if first.direction is Direction.DEBIT else (second, first)
        view["debit_account_id"] = debit.account_id
        view["credit_account_id"] = credit.account_id
        view["amount"] = debit.amount
        view["currency"] = debit.currency
    view.update(
        {
            "description": transfer.description,
            "metadata": transfer.metadata,
            "reverses": transfer.reverses,
            "reversed_amount": transfer.reversed_amount,
            "held_amount": transfer.held_amount,
            "expires_at": timestamp(transfer.expires_at),
            "created_at": timestamp(transfer.created_at),
            "posted_at": timestamp(transfer.posted_at),
        }
    )
    return view


def entry_view(entry: Entry) -> JsonObject:
    return {
        "transfer_id": entry.transfer_id,
        "direction": entry.direction.value,
        "amount": entry.amount,
        "posted_balance_after": entry.posted_after,
        "account_version": entry.account_version,
        "created_at": timestamp(entry.created_at),
    }


def event_view(event: Event) -> JsonObject:
    return {
        "id": event.id,
        "type": event.type,
        "created_at": timestamp(event.created_at),
        "data": event.data,
        "request_id": event.request_id,
    }
