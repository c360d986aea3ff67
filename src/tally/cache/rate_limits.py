"""Per-API-key rate limits: a sliding window counter (the ``limits`` library) on memory, Redis or Memcached.

``TALLY_RATE_LIMIT`` (limits notation: ``1000/second``, ``6000/minute``, ``10/2 seconds``; ``off``
disables) is the number of requests each API key may make per window; the root key counts as the
key ``root``. The counters live where ``TALLY_RATE_LIMIT_URL`` says, by default on the cache's
server (``TALLY_CACHE_URL``): in process for ``memory://`` (each process then counts on its own),
shared by every process on Redis or Memcached (ADR 0029).

The limiter never fails a request. Each decision is one call to the backend, bounded by
``TALLY_CACHE_TIMEOUT_MS`` and by what is left of the request's budget; when the call fails or
runs out of time the request is allowed (*fail open*), counted as ``failed_open``, and for
``FAILURE_COOLDOWN`` seconds the backend is not asked at all, so that a server that hangs costs one
request per cooldown its timeout, not every request. Warnings are written at most once per
``WARNING_INTERVAL``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import redis.asyncio
import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemcachedStorage, MemoryStorage, RedisStorage, Storage
from limits.aio.storage.memcached.memcachio import MemcachioBridge
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tally.services.deadline import remaining

if TYPE_CHECKING:
    from tally.config import Settings

T = TypeVar("T")
Outcome = Literal["allowed", "limited", "failed_open"]
DecisionCounter = Callable[[str, Outcome], None]  # (backend, outcome): tally_rate_limit_decisions

FAILURE_COOLDOWN = 1.0  # seconds the backend is left alone after a failure; requests pass meanwhile
WARNING_INTERVAL = 1.0  # at most one warning line per this many seconds, however many requests fail
REDIS_CONNECTIONS = 64  # per process; a call waits for a free one within its timeout
IDENTIFIER = "api-key"  # in every counter's key, next to the key id: LIMITER/api-key/key_…/1000/1/second

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Policy:
    """The quota every key gets: ``limit`` requests per ``window`` seconds."""

    limit: int
    window: int


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether one request may pass.

    ``remaining`` is known only for a refusal (0): learning it for an allowed request would cost a
    second call to the backend. ``retry_after`` (whole seconds, at least 1) is set on refusals.
    """

    outcome: Outcome
    policy: Policy
    remaining: int | None = None
    retry_after: int | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome != "limited"


class RateLimiter:
    """Counts each key's requests in a sliding window and refuses those over the quota."""

    def __init__(
        self,
        storage: Storage,
        item: RateLimitItem,
        *,
        backend: str,
        timeout: float,
        count: DecisionCounter | None = None,
        clock: Callable[[], float] = time.monotonic,
        close: Callable[[], Awaitable[None]] | None = None,
        warn: Callable[..., object] | None = None,
    ) -> None:
        """``warn`` writes the warning line (default: this module's structlog logger)."""
        self.backend = backend
        self.policy = Policy(item.amount, item.get_expiry())
        self._item = item
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self._timeout = timeout
        self._count = count
        self._clock = clock
        self._close = close
        self._warn = warn
        self._resting_until = -math.inf  # after a failure, until then every request fails open
        self._next_warning = -math.inf
        self._unwarned = 0  # failed-open requests since the last warning line
        self._running: set[asyncio.Task[Any]] = set()  # calls to the backend not yet settled

    async def check(self, key_id: str) -> Decision:
        """Count one request of ``key_id`` and decide. Never raises for a backend failure."""
        if self._clock() < self._resting_until:
            return self._failed_open()
        bound = self._bound()
        try:
            allowed = await self._bounded(self._strategy.hit(self._item, IDENTIFIER, key_id), bound)
        except TimeoutError as error:
            # Out of the request's own budget, the backend is not to blame: no cooldown, no warning.
            return self._failed_open(error if bound >= self._timeout else None)
        except Exception as error:  # any failure of the backend (refused, reset, protocol, a bug)
            return self._failed_open(error)
        if allowed:
            return self._decided(Decision("allowed", self.policy))
        return self._decided(Decision("limited", self.policy, 0, await self._retry_after(key_id)))

    async def close(self) -> None:
        """Let go of the backend's connections, and of the calls still running in the background."""
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self._close is not None:
            await self._close()

    async def _bounded(self, call: Coroutine[Any, Any, T], bound: float) -> T:
        """``call``'s answer, waited for at most ``bound`` seconds (else ``TimeoutError``).

        The call runs in a task of its own that is never cancelled: past the bound it goes on in the
        background, bounded by the client's own timeouts, and a hit that lands late still counts.
        Cancelling it instead would be unsafe: a memcachio call cancelled while it connects loses
        its slot of the pool for good, and once both slots are gone every later call fails.

        The in-process backend is awaited as it is: it does no I/O and cannot hang, and bounding it
        would let a late event loop (a busy process) fail it, and so switch limits off exactly
        when the process is overloaded.
        """
        if self.backend == "memory":
            return await call
        task = asyncio.create_task(call)
        self._running.add(task)
        task.add_done_callback(self._settled)
        async with asyncio.timeout(bound):
            return await asyncio.shield(task)

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a call that failed after its request moved on is no error

    async def _retry_after(self, key_id: str) -> int:
        """Seconds until the key's weighted count drops below its quota (a second call: refusals only).

        One window is always enough: by then the requests that filled the quota weigh less than it.
        """
        window = self.policy.window
        try:
            stats = await self._bounded(
                self._strategy.get_window_stats(self._item, IDENTIFIER, key_id), self._bound()
            )
        except Exception:  # the refusal stands; the longest possible wait is a safe answer
            return window
        # limits gives the reset as a wall-clock instant (time.time()), whatever the backend.
        return max(1, min(window, math.ceil(stats.reset_time - time.time())))

    def _bound(self) -> float:
        return min(self._timeout, remaining(self._timeout))

    def _decided(self, decision: Decision) -> Decision:
        if self._count is not None:
            self._count(self.backend, decision.outcome)
        return decision

    def _failed_open(self, error: Exception | None = None) -> Decision:
        """Allow the request undecided; ``error``, the backend's failure, rests the backend a while."""
        now = self._clock()
        self._unwarned += 1
        if error is not None:
            self._resting_until = now + FAILURE_COOLDOWN
            if now >= self._next_warning:
                self._next_warning = now + WARNING_INTERVAL
                (self._warn or _log.warning)(
                    "rate limiter backend failed; requests pass unlimited",
                    backend=self.backend,
                    error=f"{type(error).__name__}: {error}" if str(error) else type(error).__name__,
                    failed_open=self._unwarned,  # requests allowed undecided since the last line
                    cooldown_s=FAILURE_COOLDOWN,
                )
                self._unwarned = 0
        return self._decided(Decision("failed_open", self.policy))


def parse_rate_limit(text: str | None) -> RateLimitItem | None:
    """``TALLY_RATE_LIMIT`` as a limit, or ``None`` when it is unset or ``off``."""
    if text is None or text.strip().lower() in ("", "off"):
        return None
    try:
        items = parse_many(text.strip())
    except ValueError:
        items = []
    if len(items) != 1 or items[0].amount < 1:
        raise ValueError(
            f"TALLY_RATE_LIMIT={text!r}: give one limit such as 1000/second, 6000/minute or 10/2 seconds "
            "(at least 1 request), or off."
        )
    return items[0]


def build_rate_limiter(
    settings: Settings,
    *,
    count: DecisionCounter | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RateLimiter | None:
    """The limiter the settings describe, or ``None`` when rate limits are off. Connects nothing yet."""
    item = parse_rate_limit(settings.rate_limit)
    if item is None:
        return None
    timeout = settings.cache_timeout_ms / 1000
    storage, backend, close = open_storage(settings.rate_limit_url or settings.cache_url, timeout)
    return RateLimiter(storage, item, backend=backend, timeout=timeout, count=count, clock=clock, close=close)


def open_storage(url: str, timeout: float) -> tuple[Storage, str, Callable[[], Awaitable[None]] | None]:
    """The ``limits`` storage of ``url``, its backend label, and how to close its connections.

    Redis goes through redis-py (``implementation="redispy"``) on a bounded pool of our own without
    retries: the call's timeout is the only patience, and a retry inside it would only spend it.
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        memory = MemoryStorage()
        return memory, "memory", lambda: _close_memory(memory)
    if scheme in ("redis", "rediss"):
        pool: redis.asyncio.BlockingConnectionPool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_CONNECTIONS,
            timeout=timeout,  # the wait for a free connection
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        options: dict[str, Any] = {"connection_pool": pool}
        return RedisStorage(f"async+{url}", implementation="redispy", **options), "redis", pool.aclose
    if scheme == "memcached":
        # memcachio's wait for a slot of its pool (blocking_timeout) stays at its default of 5 s: it
        # must outlast the connect timeout, or a slow connect loses its slot as a cancelled one does.
        memcached = MemcachedStorage(f"async+{url}", connect_timeout=timeout, read_timeout=timeout)
        return memcached, "memcached", lambda: _close_memcached(memcached)
    raise ValueError(
        f"TALLY_RATE_LIMIT_URL (or TALLY_CACHE_URL) names {scheme!r}; "
        "use memory://, redis://host:port[/db] or memcached://host:port."
    )


async def _close_memory(storage: MemoryStorage) -> None:
    if storage.timer is not None:  # the library's expiry sweep, if one is still running
        storage.timer.cancel()


async def _close_memcached(storage: MemcachedStorage) -> None:
    if isinstance(storage.bridge, MemcachioBridge):
        (await storage.bridge.get_storage()).connection_pool.close()
