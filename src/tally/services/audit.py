"""The audit trail: one record per administrative act, written in the act's own transaction (ADR 0036).

An act and its record commit together or not at all: an act that fails, or that an idempotency key
replays, records nothing new. Each record names who acted (the key's id, ``root`` for the root key),
the request it came in (its ``X-Request-ID``), the database time, and what changed in ``details`` —
never a secret. The database refuses to change or delete a record (``store.audit_guard``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from tally.domain.accounts import Account, AccountStatus
from tally.domain.ids import new_id
from tally.services.ports import Database, Page, Transaction

ROOT_ACTOR = "root"  # the actor id of the root key, which has no key id


class AuditAction(StrEnum):
    LEDGER_CREATED = "ledger.created"
    KEY_CREATED = "key.created"
    KEY_ROTATED = "key.rotated"
    KEY_REVOKED = "key.revoked"
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_DELETED = "webhook.deleted"
    ACCOUNT_FROZEN = "account.frozen"
    ACCOUNT_UNFROZEN = "account.unfrozen"
    ACCOUNT_CLOSED = "account.closed"
    ACCOUNT_BOUNDS_CHANGED = "account.bounds_changed"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: the acting key's id (``ROOT_ACTOR`` for the root key) and the request's id."""

    key_id: str
    request_id: str | None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    ledger_id: str  # the ledger acted on (a new ledger's own id for ``ledger.created``)
    action: AuditAction
    target_type: str  # ledger, key, webhook, account
    target_id: str
    actor_key_id: str
    request_id: str | None
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: new_id("aud"))
    pk: int = 0  # set when read back


class AuditRepository(Protocol):
    async def add(self, event: AuditEvent) -> None:
        """Append the record to the transaction (never updated or deleted afterwards)."""
        ...

    async def list(
        self, ledger_id: str, *, action: AuditAction | None, after: int | None, newest_first: bool, limit: int
    ) -> Page[AuditEvent]:
        """The ledger's records in ``pk`` order (reversed when ``newest_first``), after the position
        ``after`` in that order, of ``action`` when given."""
        ...


async def record(
    tx: Transaction,
    actor: Actor,
    action: AuditAction,
    *,
    ledger_id: str,
    target: tuple[str, str],
    details: dict[str, Any] | None = None,
) -> None:
    """Record ``action`` on ``target`` (type, id) in ``tx``, at the transaction's database time."""
    target_type, target_id = target
    await tx.audit.add(
        AuditEvent(
            ledger_id=ledger_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            actor_key_id=actor.key_id,
            request_id=actor.request_id,
            at=await tx.now(),
            details=details or {},
        )
    )


_STATUS_ACTS = {
    AccountStatus.FROZEN: AuditAction.ACCOUNT_FROZEN,
    AccountStatus.OPEN: AuditAction.ACCOUNT_UNFROZEN,  # only a frozen account can become open
    AccountStatus.CLOSED: AuditAction.ACCOUNT_CLOSED,
}


def account_acts(before: Account, after: Account) -> list[tuple[AuditAction, dict[str, Any]]]:
    """The audited acts of one change of an account, one per kind, with old and new values.

    A change of name or metadata alone is no administrative act (the event feed has it).
    """
    acts: list[tuple[AuditAction, dict[str, Any]]] = []
    if after.status is not before.status:
        status = {"old_status": before.status.value, "new_status": after.status.value}
        acts.append((_STATUS_ACTS[after.status], status))
    if after.bounds != before.bounds:
        old, new = before.bounds, after.bounds
        acts.append(
            (
                AuditAction.ACCOUNT_BOUNDS_CHANGED,
                {
                    "old_min_balance": old.min_balance,
                    "old_max_balance": old.max_balance,
                    "new_min_balance": new.min_balance,
                    "new_max_balance": new.max_balance,
                },
            )
        )
    return acts


async def list_audit_events(
    database: Database,
    ledger_id: str,
    *,
    action: AuditAction | None,
    after: int | None,
    newest_first: bool,
    limit: int,
) -> Page[AuditEvent]:
    async with database.read() as tx:
        return await tx.audit.list(
            ledger_id, action=action, after=after, newest_first=newest_first, limit=limit
        )
