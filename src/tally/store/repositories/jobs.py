"""The job queue and the inbox in SQL (ADR 0023).

A claim is one ``UPDATE … WHERE pk IN (SELECT … LIMIT n) RETURNING``: on PostgreSQL the inner
select takes its rows ``FOR UPDATE SKIP LOCKED``, so concurrent workers claim different jobs and
never wait for each other; on SQLite the write transaction already holds the database's write lock
(``BEGIN IMMEDIATE``). Every outcome of a claim is fenced by ``attempts``: a worker whose lease ran
out, and whose job another worker claimed since, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, literal_column, select, text, update

from tally.services.queue_ports import Job, JobStatus, NewJob, QueueDepth
from tally.store import tables as t
from tally.store.codec import dump_json, from_micros, load_json, maybe_from_micros, to_micros
from tally.store.repositories.base import SqlRepository

_j = t.jobs
_CLAIMABLE = (JobStatus.READY.value, JobStatus.RUNNING.value)
_NOTIFY = text("SELECT pg_notify('tally_jobs', :queue)")
NOTIFY_CHANNEL = "tally_jobs"


def _job(row: Any) -> Job:
    return Job(
        pk=row.pk,
        queue=row.queue,
        payload=load_json(row.payload),
        status=JobStatus(row.status),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        run_at=from_micros(row.run_at),
        request_id=row.request_id,
        dedupe_key=row.dedupe_key,
        last_error=row.last_error,
        created_at=from_micros(row.created_at),
    )


class SqlJobRepository(SqlRepository):
    async def add(self, job: NewJob, at: datetime) -> int | None:
        self._tx.mark_written()
        micros = to_micros(at)
        values = {
            "queue": job.queue,
            "payload": dump_json(job.payload),
            "status": JobStatus.READY.value,
            "attempts": 0,
            "max_attempts": job.max_attempts,
            "run_at": to_micros(job.run_at) if job.run_at is not None else micros,
            "request_id": job.request_id,
            "dedupe_key": job.dedupe_key,
            "created_at": micros,
            "updated_at": micros,
        }
        if job.dedupe_key is None:
            statement: Any = insert(_j).values(**values).returning(_j.c.pk)
        else:
            statement = (
                self._upsert(_j)
                .values(**values)
                .on_conflict_do_nothing(index_elements=[_j.c.queue, _j.c.dedupe_key])
                .returning(_j.c.pk)
            )
        pk: int | None = (await self._conn.execute(statement)).scalar()
        if pk is not None and self._postgres:
            await self._conn.execute(_NOTIFY, {"queue": job.queue})  # delivered at commit
        if pk is not None:
            self._tx.queued(job.queue)
        return pk

    async def claim(self, queue: str, worker: str, limit: int, at: datetime, lease: timedelta) -> list[Job]:
        self._tx.mark_written()
        now = to_micros(at)
        due = (
            select(_j.c.pk)
            .where(_j.c.queue == queue, _j.c.status.in_(_CLAIMABLE), _j.c.run_at <= now)
            .order_by(_j.c.run_at, _j.c.pk)
            .limit(limit)
        )
        if self._postgres:
            due = due.with_for_update(skip_locked=True)
        claim = (
            update(_j)
            .where(_j.c.pk.in_(due.scalar_subquery()))
            .values(
                status=JobStatus.RUNNING.value,
                attempts=_j.c.attempts + 1,
                leased_by=worker,
                run_at=to_micros(at + lease),  # the lease's end: claimable again after it
                updated_at=now,
            )
            .returning(*_j.c)
        )
        rows = (await self._conn.execute(claim)).all()
        return sorted((_job(row) for row in rows), key=lambda job: (job.run_at, job.pk))

    async def _settle(self, job: Job, at: datetime, **values: Any) -> bool:
        self._tx.mark_written()
        result = await self._conn.execute(
            update(_j)
            .where(
                _j.c.pk == job.pk,
                _j.c.attempts == job.attempts,
                _j.c.status == JobStatus.RUNNING.value,
            )
            .values(updated_at=to_micros(at), leased_by=None, **values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def finish(self, job: Job, at: datetime) -> bool:
        return await self._settle(job, at, status=JobStatus.DONE.value)

    async def retry(self, job: Job, run_at: datetime, error: str, at: datetime) -> bool:
        return await self._settle(
            job, at, status=JobStatus.READY.value, run_at=to_micros(run_at), last_error=error[:2000]
        )

    async def bury(self, job: Job, error: str, at: datetime) -> bool:
        return await self._settle(job, at, status=JobStatus.DEAD.value, last_error=error[:2000])

    async def release(self, job: Job, run_at: datetime, at: datetime) -> bool:
        return await self._settle(
            job, at, status=JobStatus.READY.value, run_at=to_micros(run_at), attempts=_j.c.attempts - 1
        )

    async def redrive(self, queue: str, pks: Sequence[int], at: datetime) -> int:
        if not pks:
            return 0
        self._tx.mark_written()
        now = to_micros(at)
        result = await self._conn.execute(
            update(_j)
            .where(_j.c.queue == queue, _j.c.pk.in_(list(pks)), _j.c.status == JobStatus.DEAD.value)
            .values(status=JobStatus.READY.value, attempts=0, run_at=now, last_error=None, updated_at=now)
        )
        count: int = result.rowcount  # type: ignore[attr-defined]
        if count and self._postgres:
            await self._conn.execute(_NOTIFY, {"queue": queue})
        if count:
            self._tx.queued(queue)
        return count

    async def get(self, pk: int) -> Job | None:
        row = (await self._conn.execute(select(_j).where(_j.c.pk == pk))).first()
        return None if row is None else _job(row)

    async def dead(self, queue: str, limit: int) -> list[int]:
        query = (
            select(_j.c.pk)
            .where(_j.c.queue == queue, _j.c.status == JobStatus.DEAD.value)
            .order_by(_j.c.run_at, _j.c.pk)
            .limit(limit)
        )
        return list((await self._conn.execute(query)).scalars())

    async def depths(self, at: datetime) -> list[QueueDepth]:
        del at
        query = (
            select(_j.c.queue, _j.c.status, func.count().label("n"), func.min(_j.c.run_at).label("oldest"))
            .where(_j.c.status.in_((*_CLAIMABLE, JobStatus.DEAD.value)))
            .group_by(_j.c.queue, _j.c.status)
        )
        return [
            QueueDepth(row.queue, JobStatus(row.status), row.n, maybe_from_micros(row.oldest))
            for row in (await self._conn.execute(query)).all()
        ]


class SqlInboxRepository(SqlRepository):
    async def claim(self, consumer: str, message_id: str, at: datetime) -> bool:
        self._tx.mark_written()
        statement: Any = (
            self._upsert(t.inbox)
            .values(consumer=consumer, message_id=message_id, created_at=to_micros(at))
            .on_conflict_do_nothing()
            .returning(literal_column("1"))
        )
        return (await self._conn.execute(statement)).first() is not None
