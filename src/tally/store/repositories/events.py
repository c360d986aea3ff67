"""The outbox and its feed in SQL (ADR 0024).

The feed is ordered by ``(xid, pk)``. On PostgreSQL ``xid`` is the writing transaction's id
(``pg_current_xact_id()``), and a read serves only events whose ``xid`` is below its snapshot's
``xmin``: every transaction with a smaller id has ended, so no event can later appear before a
position already served, whatever order transactions commit in. On SQLite one writer commits at a
time, in ``pk`` order; ``xid`` is 0 and every committed event is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, insert, literal_column, select, tuple_

from tally.domain.ids import new_id
from tally.services.ports import Event, EventKey, FeedPosition, NewEvent
from tally.store import tables as t
from tally.store.codec import dump_json, from_micros, load_json, to_micros
from tally.store.repositories.base import SqlRepository

_ev = t.events
_fp = t.feed_positions
_insert = insert(_ev)
_insert_pg = insert(_ev).values(xid=literal_column("pg_current_xact_id()::text::bigint")).returning(_ev.c.pk)
_by_pks = select(_ev).where(_ev.c.pk.in_(bindparam("pks", expanding=True))).order_by(_ev.c.xid, _ev.c.pk)
_HORIZON: ColumnElement[int] = literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")


def _event(row: Any) -> Event:
    return Event(
        pk=row.pk,
        id=row.id,
        ledger_id=row.ledger_id,
        type=row.type,
        data=load_json(row.data),
        request_id=row.request_id,
        created_at=from_micros(row.created_at),
        position=FeedPosition(row.xid, row.pk),
    )


class SqlEventRepository(SqlRepository):
    async def add(self, event: NewEvent, at: datetime) -> int:
        [pk] = await self._add([event], at)
        return pk

    async def add_many(self, events: Sequence[NewEvent], at: datetime) -> None:
        if events:
            await self._add(events, at)

    async def _add(self, events: Sequence[NewEvent], at: datetime) -> list[int]:
        self._tx.mark_written()
        micros = to_micros(at)
        rows = [
            {
                "id": new_id("evt"),
                "ledger_id": event.ledger_id,
                "type": event.type,
                "data": dump_json(event.data),
                "request_id": event.request_id,
                "created_at": micros,
            }
            for event in events
        ]
        if self._postgres:
            pks: list[int] = list((await self._conn.execute(_insert_pg, rows)).scalars())
        else:
            pks = list(await self._sqlite_added(_insert, [{**row, "xid": 0} for row in rows]))
        self._tx.saw_events(pks)
        return pks

    async def position_of(self, event_id: str) -> tuple[str, FeedPosition] | None:
        query = select(_ev.c.ledger_id, _ev.c.xid, _ev.c.pk).where(_ev.c.id == event_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else (row.ledger_id, FeedPosition(row.xid, row.pk))

    async def feed(
        self, ledger_id: str | None, after: FeedPosition | None, types: Sequence[str] | None, limit: int
    ) -> list[Event]:
        query, params = self._feed(select(_ev), ledger_id, after, types, limit)
        return [_event(row) for row in (await self._conn.execute(query, params)).all()]

    async def positions(
        self, after: FeedPosition | None, types: Sequence[str] | None, limit: int
    ) -> list[FeedPosition]:
        query, params = self._feed(select(_ev.c.xid, _ev.c.pk), None, after, types, limit)
        return [FeedPosition(row.xid, row.pk) for row in (await self._conn.execute(query, params)).all()]

    async def keys(self, after: FeedPosition | None, limit: int) -> list[EventKey]:
        query, params = self._feed(
            select(_ev.c.xid, _ev.c.pk, _ev.c.ledger_id, _ev.c.type), None, after, None, limit
        )
        return [
            EventKey(FeedPosition(row.xid, row.pk), row.ledger_id, row.type)
            for row in (await self._conn.execute(query, params)).all()
        ]

    async def get_many(self, pks: Sequence[int]) -> list[Event]:
        return [_event(row) for row in (await self._conn.execute(_by_pks, {"pks": list(pks)})).all()]

    def _feed(
        self,
        query: Select[Any],
        ledger_id: str | None,
        after: FeedPosition | None,
        types: Sequence[str] | None,
        limit: int,
    ) -> tuple[Select[Any], dict[str, int]]:
        """``query`` over the feed: its next ``limit`` rows after ``after``, in feed order."""
        conditions: list[ColumnElement[bool]] = []
        if ledger_id is not None:
            conditions.append(_ev.c.ledger_id == ledger_id)
        if after is not None and self._postgres:
            conditions.append(tuple_(_ev.c.xid, _ev.c.pk) > tuple_(bindparam("a_xid"), bindparam("a_pk")))
        elif after is not None:
            # Every xid is 0 here, and SQLite (3.40) seeks an index on a row value's first column
            # only: ``(xid, pk) > (0, ?)`` read the feed from its start on every call.
            conditions += [_ev.c.xid == bindparam("a_xid"), _ev.c.pk > bindparam("a_pk")]
        if types:
            conditions.append(_ev.c.type.in_(list(types)))
        if self._postgres:
            conditions.append(_ev.c.xid < _HORIZON)
        params = {"a_xid": after.xid, "a_pk": after.pk} if after is not None else {}
        return query.where(*conditions).order_by(_ev.c.xid, _ev.c.pk).limit(limit), params

    async def get(self, pk: int) -> Event | None:
        row = (await self._conn.execute(select(_ev).where(_ev.c.pk == pk))).first()
        return None if row is None else _event(row)

    async def tail(self) -> FeedPosition | None:
        # Served by ix_events_xid_pk, read backwards from its end.
        query = select(_ev.c.xid, _ev.c.pk).order_by(_ev.c.xid.desc(), _ev.c.pk.desc()).limit(1)
        if self._postgres:
            query = query.where(_ev.c.xid < _HORIZON)
        row = (await self._conn.execute(query)).first()
        return None if row is None else FeedPosition(row.xid, row.pk)

    async def consumer_position(self, consumer: str) -> FeedPosition | None:
        row = (await self._conn.execute(select(_fp).where(_fp.c.consumer == consumer))).first()
        return None if row is None else FeedPosition(row.xid, row.pk)

    async def advance(self, consumer: str, position: FeedPosition) -> None:
        self._tx.mark_written()
        values = {"consumer": consumer, "xid": position.xid, "pk": position.pk}
        upsert = self._upsert(_fp).values(**values)
        await self._conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[_fp.c.consumer],
                set_={"xid": position.xid, "pk": position.pk},
                # Forward only: a consumer behind another of its name (a slower process) never
                # takes the stored position back.
                where=tuple_(_fp.c.xid, _fp.c.pk) < tuple_(upsert.excluded.xid, upsert.excluded.pk),
            )
        )
