"""Memcached as the cache server (``memcachio``).

Storage layout: the item's ``flags`` tell how to read its bytes::

    flags 0   value                                  unversioned
    flags 1   8-byte big-endian version + value      versioned

An empty value is a tombstone (a versioned one is its 8-byte header alone). Items with other
flags, or too short for their header, read as absent and may be overwritten.

Keys: memcached's are at most 250 bytes, without whitespace or control characters. A key that is
longer, holds anything but printable ASCII, or starts with ``#`` is stored under ``#sha256:`` and
the hex SHA-256 of its UTF-8 bytes; keys kept as they are never start with ``#``, so the two kinds
cannot collide.

Expiry: whole seconds, rounded up, at least 1 and at most 30 days (memcached reads a larger
number as a unix time). Memcached's clock ticks once a second, so an entry may go up to about
a second before its rounded expiry.

The versioned set is ``gets`` then ``cas`` (``add`` when absent), tried again on a conflict: some
other writer stored in between, and as soon as what is stored holds a greater version the set is
refused, so the attempts are bounded in practice by the key's concurrent writers. The cap of 16
only stops a livelock (with 5, the highest of 50 concurrent writers was refused in about a third
of runs, leaving a lower version cached); the whole call is bounded by ``timeout`` anyway.

Recovery: memcachio reconnects by itself after a server restart (a call on a dead connection
fails, the next one connects again). But a call cancelled while its connection is being made
(``GuardedCache``'s time bound, a request's budget) loses that slot of memcachio's pool for good,
and once both slots are lost every later call fails. So after any call that failed for want of
an answer, or was cancelled, the client is replaced by a fresh one; the old one is disconnected
once the calls still using it are done.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import memcachio
from memcachio.errors import MemcachedError

from tally.services.cache_ports import CacheUnavailable

_UNVERSIONED = 0
_VERSIONED = 1
_VERSION = struct.Struct(">Q")
_CAS_ATTEMPTS = 16
_MAX_EXPIRY = 30 * 24 * 3600  # memcached reads a larger expiry as a unix timestamp
_MAX_KEY_BYTES = 250
_PLAIN_KEY = re.compile(rb"[\x21\x22\x24-\x7e][\x21-\x7e]*")  # printable, no space, not starting with "#"


class MemcachedCache:
    """``Cache`` on the Memcached server at ``host:port``; every call answers or fails within ``timeout``."""

    backend = "memcached"
    in_process = False

    def __init__(self, host: str, port: int, *, timeout: float) -> None:
        self._endpoint = (host, port)
        self._timeout = timeout
        self._closed = False
        self._client = self._connect()
        self._calls: dict[memcachio.Client[bytes], int] = {}  # calls in flight, per client

    async def get(self, key: str) -> bytes | None:
        name = memcached_key(key)
        async with self._answering() as client:
            item = (await client.get(name)).get(name)
        return None if item is None else _value(item) or None

    async def set(self, key: str, value: bytes, *, ttl: float, version: int | None = None) -> bool:
        name, expiry = memcached_key(key), _expiry(ttl)
        if version is None:
            async with self._answering() as client:
                return await client.set(name, value, flags=_UNVERSIONED, expiry=expiry)
        if not 0 <= version < 2**64:
            raise ValueError(f"a version is an integer in [0, 2**64), not {version}")
        stored = _VERSION.pack(version) + value
        async with self._answering() as client:
            for _ in range(_CAS_ATTEMPTS):
                item = (await client.gets(name)).get(name)
                if item is None:
                    if await client.add(name, stored, flags=_VERSIONED, expiry=expiry):
                        return True
                    continue  # another writer added it first: compare with theirs
                current = _version(item)
                if current is not None and current > version:
                    return False
                if item.cas is not None and await client.cas(
                    name, stored, item.cas, flags=_VERSIONED, expiry=expiry
                ):
                    return True
        return False

    async def add(self, key: str, value: bytes, *, ttl: float) -> bool:
        async with self._answering() as client:
            return await client.add(memcached_key(key), value, flags=_UNVERSIONED, expiry=_expiry(ttl))

    async def delete(self, key: str) -> None:
        async with self._answering() as client:
            await client.delete(memcached_key(key))

    async def ping(self) -> None:
        async with self._answering() as client:
            await client.version()

    async def close(self) -> None:
        self._closed = True
        for client in {self._client, *self._calls}:
            _disconnect(client)
        await asyncio.sleep(0)  # let the transports finish closing their sockets

    def _connect(self) -> memcachio.Client[bytes]:
        return memcachio.Client(
            self._endpoint,
            decode_responses=False,
            connect_timeout=self._timeout,
            read_timeout=self._timeout,
            blocking_timeout=self._timeout,
        )

    @asynccontextmanager
    async def _answering(self) -> AsyncIterator[memcachio.Client[bytes]]:
        """The client for one call, bounded by ``timeout``; failures become ``CacheUnavailable``."""
        client = self._client
        self._calls[client] = self._calls.get(client, 0) + 1
        try:
            async with asyncio.timeout(self._timeout):
                yield client
        except MemcachedError as error:  # the server answered with an error: the connection is sound
            raise CacheUnavailable(f"memcached: {error!r}") from error
        except (OSError, TimeoutError) as error:
            self._replace(client)
            raise CacheUnavailable(f"memcached: {error!r}") from error
        except asyncio.CancelledError:
            self._replace(client)  # the cancelled call may have cost the pool a slot
            raise
        finally:
            self._calls[client] -= 1
            if not self._calls[client]:
                del self._calls[client]
                if client is not self._client:
                    # The last call on a replaced client: the others were left to finish (a
                    # timeout in one call must not fail the calls beside it).
                    _disconnect(client)

    def _replace(self, failed: memcachio.Client[bytes]) -> None:
        if self._client is failed and not self._closed:
            self._client = self._connect()


def memcached_key(key: str) -> bytes:
    """The memcached key that stores ``key`` (see the module docstring)."""
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) <= _MAX_KEY_BYTES and _PLAIN_KEY.fullmatch(raw):
        return raw
    return b"#sha256:" + hashlib.sha256(raw).hexdigest().encode("ascii")


def _version(item: memcachio.MemcachedItem[bytes]) -> int | None:
    """The version an item holds; ``None`` when unversioned or unreadable."""
    if item.flags != _VERSIONED or len(item.value) < _VERSION.size:
        return None
    version: int = _VERSION.unpack_from(item.value)[0]
    return version


def _value(item: memcachio.MemcachedItem[bytes]) -> bytes:
    """The value an item holds, empty for a tombstone or an item this backend did not write."""
    if item.flags == _UNVERSIONED:
        return item.value
    if item.flags == _VERSIONED:
        return item.value[_VERSION.size :]
    return b""


def _expiry(ttl: float) -> int:
    return min(max(1, math.ceil(ttl)), _MAX_EXPIRY)


def _disconnect(client: memcachio.Client[bytes]) -> None:
    """Close every connection of ``client``.

    The pool's ``close()`` only reaches the connections idle in its queue; one taken out by a call
    in flight is tracked only in ``_active_connections``, so it is closed from there.
    """
    pool = client.connection_pool
    in_use = list(pool._active_connections) if isinstance(pool, memcachio.SingleServerPool) else []
    pool.close()
    for connection in in_use:
        connection.close()
