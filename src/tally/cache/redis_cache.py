"""Redis as the cache server (``redis.asyncio``).

Storage layout: one Redis string per key, its first byte telling how to read the rest::

    b"u" + value                       unversioned
    b"v" + 20 ASCII digits + value     versioned: the version, zero-padded to 20 digits

An empty value is a tombstone, so a versioned tombstone is the 21 bytes of its header. Twenty
digits hold any version below 2**64. The versioned set runs as one Lua script, so the compare
and the write are atomic on the server; Lua numbers are doubles, exact only up to 2**53, so the
script compares the padded digits as strings, which orders equal-length decimals like the numbers.
The TTL is Redis's own (``PX``, in milliseconds).

A call is tried once more, at once, when its connection fails: after a server restart every pooled
connection is dead, and each would otherwise fail one request before reconnecting. A failure
after that, or a call that outlasts ``timeout`` (the caller bounds the whole), raises
``CacheUnavailable`` and the caller goes to the database. So the same object works again once the
server is back; the script is loaded again by ``EVALSHA``'s fallback when a restarted server no
longer knows it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tally.services.cache_ports import CacheUnavailable

_UNVERSIONED = b"u"
_VERSIONED = b"v"
_DIGITS = 20
_VERSION_LIMIT = 2**64  # versions are below it: 20 digits, as in the memcached backend's header

# KEYS[1]: the entry; ARGV[1]: the new version (20 digits); ARGV[2]: the bytes to store; ARGV[3]: PX.
_SET_VERSIONED = """
local head = redis.call('GETRANGE', KEYS[1], 0, 20)
if string.len(head) == 21 and string.sub(head, 1, 1) == 'v' and string.sub(head, 2) > ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class RedisCache:
    """``Cache`` on a Redis server at ``url``; every call answers or fails within ``timeout`` seconds."""

    backend = "redis"
    in_process = False

    def __init__(self, url: str, *, timeout: float) -> None:
        self._timeout = timeout
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),  # one reconnect for a pooled connection the server dropped
        )
        self._set_versioned = self._redis.register_script(_SET_VERSIONED)

    async def get(self, key: str) -> bytes | None:
        async with self._answering():
            stored = await self._redis.get(key)
        if not isinstance(stored, bytes):  # None: absent (str only comes with decode_responses)
            return None
        if stored[:1] == _UNVERSIONED:
            return stored[1:] or None
        if stored[:1] == _VERSIONED and len(stored) >= 1 + _DIGITS:
            return stored[1 + _DIGITS :] or None
        return None  # not written by this backend: as good as absent

    async def set(self, key: str, value: bytes, *, ttl: float, version: int | None = None) -> bool:
        if version is None:
            async with self._answering():
                await self._redis.set(key, _UNVERSIONED + value, px=_milliseconds(ttl))
            return True
        if not 0 <= version < _VERSION_LIMIT:
            raise ValueError(f"a version is an integer in [0, 2**64), not {version}")
        digits = b"%020d" % version
        async with self._answering():
            stored = await self._set_versioned(
                keys=[key], args=[digits, _VERSIONED + digits + value, _milliseconds(ttl)]
            )
        return bool(stored)

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool:
        async with self._answering():
            stored = await self._redis.set(key, _UNVERSIONED + value, px=_milliseconds(ttl), nx=True)
        return bool(stored)

    async def delete(self, key: str) -> None:
        async with self._answering():
            await self._redis.delete(key)

    async def ping(self) -> None:
        async with self._answering():
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

    @asynccontextmanager
    async def _answering(self) -> AsyncIterator[None]:
        """Bound the block by ``timeout``; turn every way the server can fail into ``CacheUnavailable``."""
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except (RedisError, OSError, TimeoutError) as error:
            raise CacheUnavailable(f"redis: {error!r}") from error


def _milliseconds(ttl: float) -> int:
    """``PX`` of a TTL in seconds: rounded up, at least 1 (Redis refuses 0)."""
    return max(1, math.ceil(ttl * 1000))
