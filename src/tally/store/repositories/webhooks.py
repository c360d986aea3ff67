"""Webhook subscriptions, their deliveries and each delivery's attempts in SQL (ADR 0025)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from tally.domain.ids import new_id
from tally.services.ports import Page
from tally.services.webhook_ports import Delivery, Webhook
from tally.store import tables as t
from tally.store.codec import from_micros, maybe_from_micros, maybe_to_micros, to_micros
from tally.store.repositories.base import SqlRepository, page_of

_w = t.webhooks
_d = t.deliveries
_a = t.delivery_attempts


def _webhook(row: Any) -> Webhook:
    return Webhook(
        pk=row.pk,
        id=row.id,
        ledger_id=row.ledger_id,
        url=row.url,
        event_types=tuple(row.event_types.split(",")),
        max_per_second=row.max_per_second,
        secret=row.secret,
        created_at=from_micros(row.created_at),
        deleted_at=maybe_from_micros(row.deleted_at),
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        pk=row.pk,
        id=row.id,
        webhook_pk=row.webhook_pk,
        event_pk=row.event_pk,
        status=row.status,
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        created_at=from_micros(row.created_at),
        updated_at=from_micros(row.updated_at),
        delivered_at=maybe_from_micros(row.delivered_at),
    )


class SqlWebhookRepository(SqlRepository):
    async def add(self, webhook: Webhook) -> Webhook:
        self._tx.mark_written()
        result = await self._conn.execute(
            insert(_w)
            .values(
                id=webhook.id,
                ledger_id=webhook.ledger_id,
                url=webhook.url,
                event_types=",".join(webhook.event_types),
                max_per_second=webhook.max_per_second,
                secret=webhook.secret,
                next_slot_at=0,
                created_at=to_micros(webhook.created_at),
                deleted_at=maybe_to_micros(webhook.deleted_at),
            )
            .returning(_w.c.pk)
        )
        return replace(webhook, pk=result.scalar_one())

    async def get(self, ledger_id: str, webhook_id: str) -> Webhook | None:
        query = select(_w).where(
            _w.c.id == webhook_id, _w.c.ledger_id == ledger_id, _w.c.deleted_at.is_(None)
        )
        row = (await self._conn.execute(query)).first()
        return None if row is None else _webhook(row)

    async def get_by_pk(self, pk: int) -> Webhook | None:
        row = (await self._conn.execute(select(_w).where(_w.c.pk == pk))).first()
        return None if row is None else _webhook(row)

    async def list(self, ledger_id: str, *, after: int | None, limit: int) -> Page[Webhook]:
        query = select(_w).where(_w.c.ledger_id == ledger_id, _w.c.deleted_at.is_(None))
        if after is not None:
            query = query.where(_w.c.pk > after)
        rows = (await self._conn.execute(query.order_by(_w.c.pk).limit(limit + 1))).all()
        return page_of(rows, limit, _webhook, lambda row: row.pk)

    async def delete(self, ledger_id: str, webhook_id: str, at: datetime) -> bool:
        self._tx.mark_written()
        result = await self._conn.execute(
            update(_w)
            .where(_w.c.id == webhook_id, _w.c.ledger_id == ledger_id, _w.c.deleted_at.is_(None))
            .values(deleted_at=to_micros(at))
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def subscribed(self, ledger_id: str, event_type: str) -> Sequence[Webhook]:
        # A ledger has a handful of subscriptions: filter the types here rather than in SQL.
        query = select(_w).where(_w.c.ledger_id == ledger_id, _w.c.deleted_at.is_(None)).order_by(_w.c.pk)
        found = [_webhook(row) for row in (await self._conn.execute(query)).all()]
        return [w for w in found if "*" in w.event_types or event_type in w.event_types]

    async def take_slot(self, pk: int, interval: timedelta, at: datetime) -> datetime:
        """GCRA: the slot is ``max(next_slot_at, now)``; the next one starts ``interval`` later."""
        self._tx.mark_written()
        now = to_micros(at)
        step = int(interval.total_seconds() * 1_000_000)
        result = await self._conn.execute(
            update(_w)
            .where(_w.c.pk == pk)
            .values(next_slot_at=self._greatest(_w.c.next_slot_at, now) + step)
            .returning(_w.c.next_slot_at)
        )
        return from_micros(result.scalar_one() - step)


class SqlDeliveryRepository(SqlRepository):
    async def add(self, webhook_pk: int, event_pk: int, at: datetime) -> int | None:
        self._tx.mark_written()
        micros = to_micros(at)
        statement: Any = (
            self._upsert(_d)
            .values(
                id=new_id("dlv"),
                webhook_pk=webhook_pk,
                event_pk=event_pk,
                status="pending",
                attempts=0,
                created_at=micros,
                updated_at=micros,
            )
            .on_conflict_do_nothing(index_elements=[_d.c.webhook_pk, _d.c.event_pk])
            .returning(_d.c.pk)
        )
        pk: int | None = (await self._conn.execute(statement)).scalar()
        return pk

    async def get(self, pk: int) -> Delivery | None:
        row = (await self._conn.execute(select(_d).where(_d.c.pk == pk))).first()
        return None if row is None else _delivery(row)

    async def list(
        self, webhook_pk: int, *, status: str | None, after: int | None, limit: int
    ) -> Page[Delivery]:
        query = select(_d).where(_d.c.webhook_pk == webhook_pk)
        if status is not None:
            query = query.where(_d.c.status == status)
        if after is not None:
            query = query.where(_d.c.pk > after)
        rows = (await self._conn.execute(query.order_by(_d.c.pk).limit(limit + 1))).all()
        return page_of(rows, limit, _delivery, lambda row: row.pk)

    async def record_attempt(
        self,
        delivery_pk: int,
        attempt: int,
        at: datetime,
        *,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        outcome: str,
    ) -> None:
        self._tx.mark_written()
        micros = to_micros(at)
        await self._conn.execute(
            self._upsert(_a)
            .values(
                delivery_pk=delivery_pk,
                attempt=attempt,
                at=micros,
                status_code=status_code,
                error=None if error is None else error[:2000],
                duration_ms=duration_ms,
            )
            .on_conflict_do_nothing()
        )
        await self._conn.execute(
            update(_d)
            .where(_d.c.pk == delivery_pk)
            .values(
                status=outcome,
                attempts=self._greatest(_d.c.attempts, attempt),
                last_status_code=status_code,
                last_error=None if error is None else error[:2000],
                updated_at=micros,
                delivered_at=micros if outcome == "delivered" else _d.c.delivered_at,
            )
        )

    async def attempts(self, delivery_pk: int) -> Sequence[dict[str, Any]]:
        """The delivery's attempts, oldest first (for the history endpoint)."""
        query = select(_a).where(_a.c.delivery_pk == delivery_pk).order_by(_a.c.attempt)
        return [dict(row._mapping) for row in (await self._conn.execute(query)).all()]

    async def dead(self, webhook_pk: int) -> Sequence[int]:
        query = select(_d.c.pk).where(_d.c.webhook_pk == webhook_pk, _d.c.status == "dead").order_by(_d.c.pk)
        return list((await self._conn.execute(query)).scalars())

    async def revive(self, delivery_pks: Sequence[int], at: datetime) -> None:
        if not delivery_pks:
            return
        self._tx.mark_written()
        await self._conn.execute(
            update(_d)
            .where(_d.c.pk.in_(list(delivery_pks)), _d.c.status == "dead")
            .values(status="pending", updated_at=to_micros(at))
        )
