"""The commit listener: what a write changed goes to the cache, then to the other processes.

It runs after the commit and before the response (``Database.listen_to_commits``), so a client
that got its answer finds the new state in a shared cache, and in this process's own. It can never
fail the write it follows: the write is committed, and a cache that is down only costs hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

from tally.cache.accounts import AccountCache
from tally.cache.keys import KeyCache
from tally.services.ports import Committed

_log = structlog.get_logger(__name__)


class Invalidation(Protocol):
    async def publish(self, drops: Sequence[tuple[str, int | None]]) -> None:
        """Tell the other processes of ``drops``."""
        ...


class WriteThrough:
    def __init__(self, accounts: AccountCache, keys: KeyCache, invalidation: Invalidation | None) -> None:
        self._accounts = accounts
        self._keys = keys
        self._invalidation = invalidation

    async def __call__(self, committed: Committed) -> None:
        try:
            drops = await self._accounts.written(committed)
            drops += await self._keys.revoked(committed.revoked_keys)
            if self._invalidation is not None:
                await self._invalidation.publish(drops)
        except Exception:  # committed already: log, never fail the request
            _log.exception("cache write-through failed", accounts=len(committed.accounts))
