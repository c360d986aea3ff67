"""The three cache backends keep one contract (``services.cache_ports.Cache``), on real servers.

Every behaviour test runs on ``memory``, ``redis`` and ``memcached``; the fault tests kill the
server (SIGKILL) and start it again on the same port, and the same client object must answer
again. The Redis invalidation channel is tested last. Servers are shared by the tests of this
module (one per xdist worker), so each test writes under keys of its own.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, suppress
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from tally.cache.factory import open_cache, open_channel
from tally.cache.memcached_cache import memcached_key
from tally.cache.redis_channel import RedisInvalidationChannel
from tally.services.cache_ports import Cache, CacheUnavailable
from tests.cache_servers import BACKENDS, HOST, CacheServer

TIMEOUT = 0.5  # seconds a cache call may take
TTL = 60.0
HANG = 10.0  # a call that takes this long has hung: far above TIMEOUT, no timing is asserted below it
SERVER_BACKENDS = ("redis", "memcached")
T = TypeVar("T")


def start(server: CacheServer) -> None:
    # CacheServer.start() leaves its log file for the garbage collector to close; with warnings
    # as errors, that ResourceWarning would fail whichever test starts the server.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        server.start()


def running(kind: str) -> Iterator[CacheServer]:
    server = CacheServer(kind)
    try:
        start(server)
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[CacheServer]:
    yield from running("redis")


@pytest.fixture(scope="module")
def memcached_server() -> Iterator[CacheServer]:
    yield from running("memcached")


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest) -> CacheServer | None:
    """The server of the backend under test (``None`` for memory), running."""
    if request.param == "memory":
        return None
    running_server: CacheServer = request.getfixturevalue(f"{request.param}_server")
    return running_server


@pytest.fixture
async def cache(server: CacheServer | None) -> AsyncIterator[Cache]:
    opened = open_cache("memory://" if server is None else server.url, max_entries=10_000, timeout=TIMEOUT)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def new_key() -> Callable[[], str]:
    """Keys no other test uses, on the shared servers."""
    prefix = f"test:{uuid.uuid4().hex}"
    count = iter(range(1_000_000))
    return lambda: f"{prefix}:{next(count)}"


@pytest.fixture
def key(new_key: Callable[[], str]) -> str:
    return new_key()


async def test_a_value_is_read_back_until_deleted(cache: Cache, key: str) -> None:
    assert await cache.set(key, b"balance", ttl=TTL) is True
    assert await cache.get(key) == b"balance"

    await cache.delete(key)

    assert await cache.get(key) is None
    await cache.delete(key)  # deleting what is not there is no error


async def test_a_missing_key_reads_as_nothing(cache: Cache, key: str) -> None:
    assert await cache.get(key) is None


async def test_ping_answers_while_the_server_is_up(cache: Cache) -> None:
    await cache.ping()


async def test_an_entry_expires_after_its_ttl(cache: Cache, key: str) -> None:
    # Memcached counts whole seconds (1.1 s is stored as 2 s, on a clock that ticks each second):
    # so wait for the entry to go, with a bound, rather than for a set time.
    await cache.set(key, b"fresh", ttl=1.1)
    assert await cache.get(key) == b"fresh"

    await eventually(lambda: cache.get(key), lambda value: value is None, within=5.0, every=0.1)


# (stored first as (value, version), or None for nothing; then the version written; whether stored)
VERSIONED_WRITES = {
    "absent": (None, 5, True),
    "over-unversioned": ((b"old", None), 5, True),
    "over-lower": ((b"old", 4), 5, True),
    "equal-replaces": ((b"old", 5), 5, True),
    "lower-refused": ((b"old", 6), 5, False),
    "over-lower-tombstone": ((b"", 4), 5, True),
    "lower-than-tombstone-refused": ((b"", 6), 5, False),
    "past-2**53-exact": ((b"old", 2**53 + 1), 2**53, False),
    "2**63": ((b"old", 2**63 - 1), 2**63, True),
}


@pytest.mark.parametrize(("first", "version", "stored"), VERSIONED_WRITES.values(), ids=VERSIONED_WRITES)
async def test_a_versioned_write_stores_unless_a_greater_version_is_held(
    cache: Cache, key: str, first: tuple[bytes, int | None] | None, version: int, stored: bool
) -> None:
    if first is not None:
        assert await cache.set(key, first[0], ttl=TTL, version=first[1]) is True

    assert await cache.set(key, b"new", ttl=TTL, version=version) is stored
    kept = first[0] if first is not None else b""
    assert await cache.get(key) == (b"new" if stored else kept or None)


async def test_a_tombstone_reads_as_nothing_but_keeps_its_version(cache: Cache, key: str) -> None:
    await cache.set(key, b"balance@7", ttl=TTL, version=7)
    assert await cache.set(key, b"", ttl=TTL, version=8) is True

    assert await cache.get(key) is None
    assert await cache.set(key, b"balance@7", ttl=TTL, version=7) is False  # a late, older load
    assert await cache.get(key) is None
    assert await cache.set(key, b"balance@8", ttl=TTL, version=8) is True
    assert await cache.get(key) == b"balance@8"


async def test_an_unversioned_write_overrides_any_version(cache: Cache, key: str) -> None:
    await cache.set(key, b"v9", ttl=TTL, version=9)

    assert await cache.set(key, b"plain", ttl=TTL) is True
    assert await cache.get(key) == b"plain"
    assert await cache.set(key, b"v1", ttl=TTL, version=1) is True
    assert await cache.get(key) == b"v1"


async def test_add_stores_only_when_the_key_is_absent(cache: Cache, key: str) -> None:
    assert await cache.add(key, b"first", ttl=TTL) is True
    assert await cache.add(key, b"second", ttl=TTL) is False
    assert await cache.get(key) == b"first"

    await cache.delete(key)

    assert await cache.add(key, b"third", ttl=TTL) is True
    assert await cache.get(key) == b"third"


async def test_concurrent_versioned_writes_leave_the_highest_version(cache: Cache, key: str) -> None:
    versions = random.sample(range(1, 10**12), 50)

    await asyncio.gather(*(cache.set(key, b"%d" % v, ttl=TTL, version=v) for v in versions))

    assert await cache.get(key) == b"%d" % max(versions)
    assert await cache.set(key, b"late", ttl=TTL, version=max(versions) - 1) is False


BINARY = bytes(range(256)) + b"\r\nEND\r\nVALUE k 0 1\r\n\x00" + b"\xff" * 4096


async def test_binary_values_round_trip(cache: Cache, new_key: Callable[[], str]) -> None:
    plain, versioned, added = new_key(), new_key(), new_key()

    await cache.set(plain, BINARY, ttl=TTL)
    await cache.set(versioned, BINARY, ttl=TTL, version=3)
    await cache.add(added, BINARY, ttl=TTL)

    assert [await cache.get(k) for k in (plain, versioned, added)] == [BINARY] * 3


async def test_long_and_unsafe_keys_are_distinct_entries(cache: Cache, key: str) -> None:
    keys = [
        f"{key} with spaces",
        f"{key}\r\nget other",
        f"{key}\ttab\x00nul",
        f"{key}:ключ:账户",
        f"{key}:" + "x" * 300,
        f"{key}:" + "x" * 301,
        f"#sha256:{key}",
        f"{key}:" + "y" * (250 - len(key) - 1),  # exactly 250 bytes: stored as it is on memcached
    ]
    for number, each in enumerate(keys):
        assert await cache.set(each, b"%d" % number, ttl=TTL, version=number) is True

    assert [await cache.get(each) for each in keys] == [b"%d" % n for n in range(len(keys))]


def test_memcached_keys_are_kept_when_safe_and_digested_otherwise() -> None:
    assert memcached_key("account:acc_123") == b"account:acc_123"
    assert memcached_key("k" * 250) == b"k" * 250
    for unsafe in ("k" * 251, "a b", "a\nb", "ключ", "#sha256:abc", ""):
        digested = memcached_key(unsafe)
        assert digested.startswith(b"#sha256:")
        assert len(digested) == len("#sha256:") + 64


@pytest.mark.parametrize("server", SERVER_BACKENDS, indirect=True)
async def test_a_killed_server_fails_calls_fast_and_the_same_client_answers_after_restart(
    cache: Cache, server: CacheServer, new_key: Callable[[], str]
) -> None:
    before, after = new_key(), new_key()
    await cache.set(before, b"v", ttl=TTL, version=1)

    server.stop(kill=True)
    try:
        for call in (
            lambda: cache.get(before),
            lambda: cache.set(before, b"v", ttl=TTL),
            lambda: cache.set(before, b"v", ttl=TTL, version=2),
            lambda: cache.add(before, b"v", ttl=TTL),
            lambda: cache.delete(before),
            cache.ping,
        ):
            with pytest.raises(CacheUnavailable):
                async with asyncio.timeout(HANG):
                    await call()
    finally:
        start(server)

    await cache.ping()
    assert await cache.get(before) is None  # nothing was persisted
    assert await cache.set(after, b"again", ttl=TTL, version=5) is True
    assert await cache.set(after, b"older", ttl=TTL, version=4) is False
    assert await cache.get(after) == b"again"


@pytest.mark.parametrize("server", SERVER_BACKENDS, indirect=True)
async def test_calls_cancelled_midway_leave_the_client_usable(cache: Cache, key: str) -> None:
    # A caller's time bound cancels cache calls at any point, connecting included.
    for pauses in range(6):
        call = asyncio.ensure_future(cache.set(key, b"v", ttl=TTL, version=pauses))
        for _ in range(pauses):
            await asyncio.sleep(0)
        call.cancel()
        with suppress(asyncio.CancelledError, CacheUnavailable):
            await call

    async with asyncio.timeout(HANG):
        assert await cache.set(key, b"answered", ttl=TTL) is True
        assert await cache.get(key) == b"answered"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((HOST, 0))
        listener.listen(64)
        port: int = listener.getsockname()[1]
        yield port


@pytest.mark.parametrize("scheme", SERVER_BACKENDS)
async def test_a_server_that_never_answers_fails_calls_instead_of_hanging(
    scheme: str, silent_port: int
) -> None:
    cache = open_cache(f"{scheme}://{HOST}:{silent_port}", max_entries=10, timeout=TIMEOUT)
    try:
        for call in (lambda: cache.get("k"), lambda: cache.set("k", b"v", ttl=TTL, version=1), cache.ping):
            with pytest.raises(CacheUnavailable):
                async with asyncio.timeout(HANG):
                    await call()
    finally:
        await cache.close()


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("memory://", "memory"),
        ("redis://h:1/0", "redis"),
        ("rediss://h", "redis"),
        ("memcached://h", "memcached"),
    ],
    ids=["memory", "redis", "rediss", "memcached"],
)
async def test_the_cache_url_names_the_backend_without_connecting(url: str, backend: str) -> None:
    cache = open_cache(url, max_entries=10, timeout=TIMEOUT)
    try:
        assert cache.backend == backend
    finally:
        await cache.close()


@pytest.mark.parametrize(
    "url", ["http://h", "memcache://h", "memcached://", "memcached://h:port", "h:6379"], ids=str
)
def test_an_unknown_cache_url_is_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ValueError, match="TALLY_CACHE_URL"):
        open_cache(url, max_entries=10, timeout=TIMEOUT)


def test_invalidations_travel_only_over_redis() -> None:
    with pytest.raises(ValueError, match="redis://"):
        open_channel("memcached://h:11211")


# The invalidation channel (Redis pub/sub) ------------------------------------------------------


class Listener:
    """Collects what one ``listen()`` yields, in a task of its own."""

    def __init__(self, channel: RedisInvalidationChannel) -> None:
        self.batches: list[list[tuple[str, int | None]]] = []
        self.task = asyncio.ensure_future(self._run(channel))

    async def _run(self, channel: RedisInvalidationChannel) -> None:
        async with aclosing(channel.listen()) as batches:
            async for batch in batches:
                self.batches.append(batch)


@pytest.fixture
def channel_name() -> str:
    return f"tally:test:{uuid.uuid4().hex}"


@pytest.fixture
async def channels(
    redis_server: CacheServer, channel_name: str
) -> AsyncIterator[Callable[[], RedisInvalidationChannel]]:
    """Channel objects on the module's Redis, all on this test's own channel name."""
    opened: list[RedisInvalidationChannel] = []

    def open_one() -> RedisInvalidationChannel:
        opened.append(RedisInvalidationChannel(redis_server.url, channel=channel_name, timeout=TIMEOUT))
        return opened[-1]

    yield open_one
    for channel in opened:
        await channel.close()


@pytest.fixture
async def listeners() -> AsyncIterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.task.cancel()
        with suppress(asyncio.CancelledError):
            await listener.task


async def test_a_published_batch_reaches_every_listener(
    channels: Callable[[], RedisInvalidationChannel], listeners: list[Listener]
) -> None:
    one, other = channels(), channels()
    listeners += [Listener(one), Listener(other)]
    batch = [("account:acc_1", 7), ("key:abc", None)]

    # A listener subscribes in its own time: publish until both heard (delivery is at most once).
    await publish_until_heard(one, batch, listeners)


async def test_a_listener_hears_again_after_the_server_restarts(
    channels: Callable[[], RedisInvalidationChannel],
    listeners: list[Listener],
    redis_server: CacheServer,
) -> None:
    channel = channels()
    listeners.append(Listener(channel))
    await publish_until_heard(channel, [("account:before", 1)], listeners)

    redis_server.stop(kill=True)
    try:
        with pytest.raises(CacheUnavailable):
            async with asyncio.timeout(HANG):
                await channel.publish([("account:lost", 2)])
        await asyncio.sleep(0.3)  # the listener tries to subscribe again while the server is down
    finally:
        start(redis_server)

    await publish_until_heard(channel, [("account:after", 3)], listeners)
    assert not listeners[0].task.done()


async def test_a_malformed_message_is_skipped_and_listening_goes_on(
    channels: Callable[[], RedisInvalidationChannel],
    listeners: list[Listener],
    redis_server: CacheServer,
    channel_name: str,
) -> None:
    channel = channels()
    listeners.append(Listener(channel))
    await publish_until_heard(channel, [("account:first", 1)], listeners)

    raw = Redis.from_url(redis_server.url)  # to send what no Tally process would
    try:
        for junk in (b"not json", b"{}", b'[["k"]]', b'[["k", -1]]', b'[["k", true]]', b"[[1, 2]]", b"\xff"):
            await raw.publish(channel_name, junk)
    finally:
        await raw.aclose()

    await publish_until_heard(channel, [("account:second", 2)], listeners)
    assert listeners[0].batches[0] == [("account:first", 1)]
    assert all(batch in ([("account:first", 1)], [("account:second", 2)]) for batch in listeners[0].batches)


async def test_close_ends_listening(
    channels: Callable[[], RedisInvalidationChannel], listeners: list[Listener]
) -> None:
    channel = channels()
    listeners.append(Listener(channel))
    await publish_until_heard(channel, [("account:acc_1", 1)], listeners)

    await channel.close()

    async with asyncio.timeout(HANG):
        await listeners[0].task


async def publish_until_heard(
    channel: RedisInvalidationChannel, batch: list[tuple[str, int | None]], listeners: list[Listener]
) -> None:
    async def heard() -> bool:
        if not all(batch in listener.batches for listener in listeners):
            with suppress(CacheUnavailable):
                await channel.publish(batch)
            return False
        return True

    await eventually(heard, lambda done: done, within=HANG, every=0.05)


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, within: float, every: float
) -> T:
    """Probe every ``every`` seconds until ``accept`` says yes; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"still {value!r} after {within} s")
        await asyncio.sleep(every)
