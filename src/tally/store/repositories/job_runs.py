"""Batch job runs in SQL (ADR 0032).

Every read or write of one run goes through the primary key (job, period). A claim inserts with
``ON CONFLICT DO NOTHING``: of two runners claiming one period at once, the second waits for the
first's commit on PostgreSQL (the unique index) or for the write lock on SQLite, then finds the row.
Takeovers, steps and releases are ``UPDATE``s fenced by ``(owner, attempts)``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import literal_column, select, update

from tally.services.job_run_ports import JobRun, RunStatus
from tally.store import tables as t
from tally.store.codec import dump_json, from_micros, load_json, maybe_from_micros, to_micros
from tally.store.repositories.base import SqlRepository

_r = t.job_runs


def _run(row: Any) -> JobRun:
    return JobRun(
        job=row.job,
        period=row.period,
        status=RunStatus(row.status),
        checkpoint=None if row.checkpoint is None else load_json(row.checkpoint),
        result=None if row.result is None else load_json(row.result),
        done=row.done,
        total=row.total,
        owner=row.owner,
        lease_until=from_micros(row.lease_until),
        attempts=row.attempts,
        started_at=from_micros(row.started_at),
        updated_at=from_micros(row.updated_at),
        finished_at=maybe_from_micros(row.finished_at),
    )


class SqlJobRunRepository(SqlRepository):
    async def get(self, job: str, period: str) -> JobRun | None:
        row = (await self._conn.execute(select(_r).where(_r.c.job == job, _r.c.period == period))).first()
        return None if row is None else _run(row)

    async def lock(self, job: str, period: str) -> JobRun | None:
        query = select(_r).where(_r.c.job == job, _r.c.period == period)
        if self._postgres:  # SQLite: the write transaction already holds the database's write lock
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return None if row is None else _run(row)

    async def insert(
        self, job: str, period: str, *, owner: str, lease_until: datetime, total: int | None, at: datetime
    ) -> JobRun | None:
        self._tx.mark_written()
        micros = to_micros(at)
        statement: Any = (
            self._upsert(_r)
            .values(
                job=job,
                period=period,
                status=RunStatus.RUNNING.value,
                checkpoint=None,
                result=None,
                done=0,
                total=total,
                owner=owner,
                lease_until=to_micros(lease_until),
                attempts=1,
                started_at=micros,
                updated_at=micros,
                finished_at=None,
            )
            .on_conflict_do_nothing(index_elements=[_r.c.job, _r.c.period])
            .returning(*_r.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else _run(row)

    async def take_over(
        self, run: JobRun, *, owner: str, lease_until: datetime, at: datetime
    ) -> JobRun | None:
        self._tx.mark_written()
        statement = (
            update(_r)
            .where(
                _r.c.job == run.job,
                _r.c.period == run.period,
                _r.c.attempts == run.attempts,
                _r.c.status == RunStatus.RUNNING.value,
            )
            .values(
                owner=owner,
                lease_until=to_micros(lease_until),
                attempts=_r.c.attempts + 1,
                updated_at=to_micros(at),
            )
            .returning(*_r.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else _run(row)

    async def fence(self, job: str, period: str, owner: str, attempts: int) -> JobRun | None:
        # A no-op UPDATE rather than a SELECT … FOR UPDATE: it locks the row on both databases, and
        # it reads no clock, so a step may still fix the transaction's time after its own locks.
        self._tx.mark_written()
        statement = (
            update(_r)
            .where(
                _r.c.job == job,
                _r.c.period == period,
                _r.c.owner == owner,
                _r.c.attempts == attempts,
                _r.c.status == RunStatus.RUNNING.value,
            )
            .values(attempts=_r.c.attempts)
            .returning(*_r.c)
        )
        row = (await self._conn.execute(statement)).first()
        return None if row is None else _run(row)

    async def _settle(self, run: JobRun, **values: Any) -> bool:
        self._tx.mark_written()
        statement: Any = (
            update(_r)
            .where(
                _r.c.job == run.job,
                _r.c.period == run.period,
                _r.c.owner == run.owner,
                _r.c.attempts == run.attempts,
                _r.c.status == RunStatus.RUNNING.value,
            )
            .values(**values)
            .returning(literal_column("1"))
        )
        return (await self._conn.execute(statement)).first() is not None

    async def advance(
        self, run: JobRun, *, checkpoint: dict[str, Any], done: int, lease_until: datetime, at: datetime
    ) -> bool:
        return await self._settle(
            run,
            checkpoint=dump_json(checkpoint),
            done=done,
            lease_until=to_micros(lease_until),
            updated_at=to_micros(at),
        )

    async def finish(self, run: JobRun, *, result: dict[str, Any], done: int, at: datetime) -> bool:
        micros = to_micros(at)
        return await self._settle(
            run,
            status=RunStatus.FINISHED.value,
            result=dump_json(result),
            done=done,
            lease_until=micros,
            updated_at=micros,
            finished_at=micros,
        )

    async def release(self, run: JobRun, at: datetime) -> bool:
        micros = to_micros(at)
        return await self._settle(run, lease_until=micros, updated_at=micros)

    async def recent(self, job: str, limit: int, *, status: RunStatus | None = None) -> list[JobRun]:
        query = select(_r).where(_r.c.job == job)
        if status is not None:
            query = query.where(_r.c.status == status.value)
        query = query.order_by(_r.c.period.desc()).limit(limit)
        return [_run(row) for row in (await self._conn.execute(query)).all()]
