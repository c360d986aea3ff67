"""Ledgers, API keys and instance settings in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, case, insert, select, update

from tally.domain.keys import ApiKey, Ledger, Scope
from tally.services.ports import Page
from tally.store import tables as t
from tally.store.codec import from_micros, maybe_from_micros, maybe_to_micros, to_micros
from tally.store.repositories.base import SqlRepository, page_of


class SqlLedgerRepository(SqlRepository):
    async def add(self, ledger: Ledger) -> None:
        self._tx.mark_written()
        await self._conn.execute(
            insert(t.ledgers).values(id=ledger.id, name=ledger.name, created_at=to_micros(ledger.created_at))
        )

    async def get(self, ledger_id: str) -> Ledger | None:
        row = (await self._conn.execute(select(t.ledgers).where(t.ledgers.c.id == ledger_id))).first()
        return None if row is None else Ledger(row.id, row.name, from_micros(row.created_at))


def _key(row: Row[Any]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        ledger_id=m["ledger_id"],
        name=m["name"],
        scopes=frozenset(Scope(s) for s in m["scopes"].split(",") if s),
        created_at=from_micros(m["created_at"]),
        revoked_at=maybe_from_micros(m["revoked_at"]),
        last_used_at=maybe_from_micros(m["last_used_at"]),
        secret_hash=m["secret_hash"],
        expires_at=maybe_from_micros(m["expires_at"]),
    )


_key_by_hash = select(t.api_keys).where(t.api_keys.c.secret_hash == bindparam("secret_hash"))


class SqlApiKeyRepository(SqlRepository):
    async def add(self, key: ApiKey) -> None:
        self._tx.mark_written()
        await self._conn.execute(
            insert(t.api_keys).values(
                id=key.id,
                ledger_id=key.ledger_id,
                name=key.name,
                scopes=",".join(sorted(s.value for s in key.scopes)),
                secret_hash=key.secret_hash,
                created_at=to_micros(key.created_at),
                expires_at=maybe_to_micros(key.expires_at),
            )
        )

    async def by_hash(self, secret_hash: bytes) -> ApiKey | None:
        row = (await self._conn.execute(_key_by_hash, {"secret_hash": secret_hash})).first()
        return None if row is None else _key(row)

    async def get(self, ledger_id: str, key_id: str) -> ApiKey | None:
        row = (
            await self._conn.execute(
                select(t.api_keys).where(t.api_keys.c.id == key_id, t.api_keys.c.ledger_id == ledger_id)
            )
        ).first()
        return None if row is None else _key(row)

    async def list(self, ledger_id: str, *, after: int | None, limit: int) -> Page[ApiKey]:
        query = select(t.api_keys).where(t.api_keys.c.ledger_id == ledger_id)
        if after is not None:
            query = query.where(t.api_keys.c.pk > after)
        rows = (await self._conn.execute(query.order_by(t.api_keys.c.pk).limit(limit + 1))).all()
        return page_of(rows, limit, _key, lambda row: row.pk)

    async def revoke(self, ledger_id: str, key_id: str, at: datetime) -> None:
        self._tx.mark_written()
        revoked = await self._conn.execute(
            update(t.api_keys)
            .where(t.api_keys.c.id == key_id, t.api_keys.c.ledger_id == ledger_id)
            .values(revoked_at=to_micros(at))
            .returning(t.api_keys.c.secret_hash)
        )
        self._tx.revoked_keys.extend(bytes(row.secret_hash) for row in revoked)

    async def expire(self, ledger_id: str, key_id: str, at: datetime) -> None:
        self._tx.mark_written()
        keys = t.api_keys
        expiry = case((keys.c.expires_at < to_micros(at), keys.c.expires_at), else_=to_micros(at))
        expiring = await self._conn.execute(
            update(keys)
            .where(keys.c.id == key_id, keys.c.ledger_id == ledger_id)
            .values(expires_at=expiry)
            .returning(keys.c.secret_hash)
        )
        # A cached copy still holds the old expiry: drop it like a revoked key's (ADR 0027).
        self._tx.revoked_keys.extend(bytes(row.secret_hash) for row in expiring)

    async def touch(self, key_id: str, at: datetime) -> None:
        self._tx.mark_written()
        await self._conn.execute(
            update(t.api_keys).where(t.api_keys.c.id == key_id).values(last_used_at=to_micros(at))
        )

    async def count_usage(self, key_id: str, day: str, requests: int) -> None:
        self._tx.mark_written()
        usage = t.key_usage
        upsert = self._upsert(usage).values(key_id=key_id, day=day, requests=requests)
        await self._conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[usage.c.key_id, usage.c.day],
                set_={"requests": usage.c.requests + upsert.excluded.requests},
            )
        )

    async def usage(self, key_id: str) -> Sequence[tuple[str, int]]:
        # Served by the primary key (key_id, day).
        usage = t.key_usage
        query = select(usage.c.day, usage.c.requests).where(usage.c.key_id == key_id).order_by(usage.c.day)
        return [(row.day, row.requests) for row in await self._conn.execute(query)]


class SqlInstanceRepository(SqlRepository):
    async def get(self, name: str) -> bytes | None:
        value: bytes | None = (
            await self._conn.execute(select(t.instance.c.value).where(t.instance.c.name == name))
        ).scalar()
        return value

    async def put_if_absent(self, name: str, value: bytes) -> bytes:
        stored = await self.get(name)
        if stored is not None:
            return stored
        self._tx.mark_written()
        await self._conn.execute(insert(t.instance).values(name=name, value=value))
        return value
