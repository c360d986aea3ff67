"""Invalidations over Redis pub/sub: every process hears which keys to drop from its own cache.

A message is a JSON array of ``[key, version]`` pairs, ``version`` an integer or ``null``. A
message that is not one is logged and skipped. Delivery is at most once: what is published
while a listener is disconnected is lost to it, and its entries live out their TTL
(``InvalidationChannel``).

The listener outlives the server: when its subscription is lost it subscribes again, waiting
50 ms after the first failure and twice as long after each next one, up to 1 s, until ``close()``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from contextlib import suppress

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tally.services.cache_ports import CacheUnavailable

_log = structlog.get_logger(__name__)

_FIRST_PAUSE = 0.05  # seconds before subscribing again after the first failure
_LAST_PAUSE = 1.0  # the longest pause between two attempts
_POLL = 0.25  # longest wait for a message before looking whether the channel was closed

Batch = list[tuple[str, int | None]]


class RedisInvalidationChannel:
    """``InvalidationChannel`` on the Redis server at ``url``.

    ``timeout`` bounds a publish, and each attempt to connect and subscribe.
    """

    def __init__(self, url: str, *, channel: str = "tally:cache:invalidate", timeout: float = 1.0) -> None:
        self._channel = channel
        self._timeout = timeout
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # this module decides when to try again
        )
        self._closed = asyncio.Event()

    async def publish(self, drops: Sequence[tuple[str, int | None]]) -> None:
        """Send ``drops`` as one message (none when empty); raise ``CacheUnavailable`` on failure."""
        if not drops:
            return
        message = json.dumps([[key, version] for key, version in drops])
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.publish(self._channel, message)
        except (RedisError, OSError, TimeoutError) as error:
            raise CacheUnavailable(f"redis: {error!r}") from error

    async def listen(self) -> AsyncGenerator[Batch, None]:
        """Batches heard on the channel until ``close()``; close the generator when done with it."""
        pause = _FIRST_PAUSE
        lost = False
        while not self._closed.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                async with asyncio.timeout(self._timeout):
                    await pubsub.subscribe(self._channel)
                if lost:
                    _log.info("invalidation channel subscribed again", channel=self._channel)
                pause, lost = _FIRST_PAUSE, False
                while not self._closed.is_set():
                    batch = await self._receive(pubsub)
                    if batch:
                        yield batch
            except (RedisError, OSError, TimeoutError) as error:
                if self._closed.is_set():
                    return  # close() disconnected us
                # One warning per outage; the attempts while it lasts are only worth a debug line.
                log = _log.debug if lost else _log.warning
                log("invalidation channel lost", channel=self._channel, error=repr(error), retry_in=pause)
                lost = True
            finally:
                with suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            if lost:
                await self._pause(pause)
                pause = min(pause * 2, _LAST_PAUSE)

    async def close(self) -> None:
        """End every ``listen()`` (within a fraction of a second) and disconnect."""
        self._closed.set()
        await self._redis.aclose()

    async def _receive(self, pubsub: PubSub) -> Batch | None:
        """The next batch, or ``None`` when none came within the poll interval or it was malformed."""
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL)
        if message is None or message.get("type") != "message":
            return None
        batch = _batch(message.get("data"))
        if batch is None:
            _log.warning(
                "malformed invalidation message skipped",
                channel=self._channel,
                data=repr(message.get("data"))[:200],
            )
        return batch

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the channel is closed meanwhile."""
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closed.wait()


def _batch(data: object) -> Batch | None:
    """The drops a message carries, or ``None`` when it is not a JSON array of ``[key, version]``."""
    if not isinstance(data, bytes | str):
        return None
    try:
        decoded = json.loads(data)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(decoded, list):
        return None
    batch: Batch = []
    for drop in decoded:
        if not (isinstance(drop, list) and len(drop) == 2 and isinstance(drop[0], str)):
            return None
        key, version = drop
        # bool is an int to Python: reject true/false explicitly.
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            return None
        batch.append((key, version))
    return batch
