"""Queued transfer batches (``POST /v1/transfer-batches``) in SQL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from sqlalchemy import insert, select, update

from tally.services.batch_ports import QueuedBatch
from tally.store import tables as t
from tally.store.codec import dump_json, from_micros, maybe_from_micros, maybe_to_micros, to_micros
from tally.store.repositories.base import SqlRepository

_b = t.transfer_batches


def _batch(row: Any) -> QueuedBatch:
    return QueuedBatch(
        pk=row.pk,
        id=row.id,
        ledger_id=row.ledger_id,
        status=row.status,
        atomic=bool(row.atomic),
        request=orjson.loads(row.request),
        results=None if row.results is None else orjson.loads(row.results),
        request_id=row.request_id,
        created_at=from_micros(row.created_at),
        completed_at=maybe_from_micros(row.completed_at),
    )


class SqlTransferBatchRepository(SqlRepository):
    async def add(self, batch: QueuedBatch) -> QueuedBatch:
        self._tx.mark_written()
        result = await self._conn.execute(
            insert(_b)
            .values(
                id=batch.id,
                ledger_id=batch.ledger_id,
                status=batch.status,
                atomic=int(batch.atomic),
                request=dump_json(batch.request),
                results=None if batch.results is None else dump_json(batch.results),
                request_id=batch.request_id,
                created_at=to_micros(batch.created_at),
                completed_at=maybe_to_micros(batch.completed_at),
            )
            .returning(_b.c.pk)
        )
        return replace(batch, pk=result.scalar_one())

    async def get(self, ledger_id: str, batch_id: str) -> QueuedBatch | None:
        query = select(_b).where(_b.c.id == batch_id, _b.c.ledger_id == ledger_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else _batch(row)

    async def get_by_pk(self, pk: int) -> QueuedBatch | None:
        row = (await self._conn.execute(select(_b).where(_b.c.pk == pk))).first()
        return None if row is None else _batch(row)

    async def save(self, batch: QueuedBatch) -> None:
        self._tx.mark_written()
        await self._conn.execute(
            update(_b)
            .where(_b.c.pk == batch.pk)
            .values(
                status=batch.status,
                results=None if batch.results is None else dump_json(batch.results),
                completed_at=maybe_to_micros(batch.completed_at),
            )
        )
