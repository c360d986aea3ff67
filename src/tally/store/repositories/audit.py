"""The audit trail in SQL: appended in the act's transaction, listed by ledger (ADR 0036).

Lists are served by the index ``(ledger_id, pk)`` in either direction; an ``action`` filter is
applied on that index's rows, so a rare action may read many rows of the ledger to fill a page
(the trail grows with administrative acts only, which are few).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, insert, select

from tally.services.audit import AuditAction, AuditEvent
from tally.services.ports import Page
from tally.store import tables as t
from tally.store.codec import dump_json, from_micros, load_json, to_micros
from tally.store.repositories.base import SqlRepository, page_of

_audit = t.audit_events


def _event(row: Row[Any]) -> AuditEvent:
    return AuditEvent(
        pk=row.pk,
        id=row.id,
        ledger_id=row.ledger_id,
        action=AuditAction(row.action),
        target_type=row.target_type,
        target_id=row.target_id,
        actor_key_id=row.actor_key_id,
        request_id=row.request_id,
        at=from_micros(row.at),
        details=load_json(row.details),
    )


class SqlAuditRepository(SqlRepository):
    async def add(self, event: AuditEvent) -> None:
        self._tx.mark_written()
        await self._conn.execute(
            insert(_audit).values(
                id=event.id,
                ledger_id=event.ledger_id,
                action=event.action.value,
                target_type=event.target_type,
                target_id=event.target_id,
                actor_key_id=event.actor_key_id,
                request_id=event.request_id,
                at=to_micros(event.at),
                details=dump_json(event.details),
            )
        )

    async def list(
        self, ledger_id: str, *, action: AuditAction | None, after: int | None, newest_first: bool, limit: int
    ) -> Page[AuditEvent]:
        query = select(_audit).where(_audit.c.ledger_id == ledger_id)
        if action is not None:
            query = query.where(_audit.c.action == action.value)
        if after is not None:
            query = query.where(_audit.c.pk < after if newest_first else _audit.c.pk > after)
        order = _audit.c.pk.desc() if newest_first else _audit.c.pk
        rows = (await self._conn.execute(query.order_by(order).limit(limit + 1))).all()
        return page_of(rows, limit, _event, lambda row: row.pk)
