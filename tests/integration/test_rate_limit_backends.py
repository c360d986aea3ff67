"""The rate limiter on its three backends: in process, and real Redis and Memcached servers.

Specifications:
- past its quota in a window, a key's next request is refused, with how long to wait; other keys
  are counted apart;
- on Redis and Memcached, two limiters (two processes) share one count; in process, each counts alone;
- when the server dies or hangs, every request is allowed (fail open) and counted ``failed_open``,
  nothing raises, and one warning line is written however many requests pass; once the server is
  back and the cooldown over, limiting resumes;
- calls cut short by the request's budget, even while connecting, leave the limiter working;
- ``TALLY_RATE_LIMIT`` is one limit in the limits notation, or ``off``.

Quotas are per day, so that no test straddles a window boundary (where the sliding window
counter's estimate may let one more request through). The cooldown runs on an injected clock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import pytest

from tally.cache.rate_limits import (
    FAILURE_COOLDOWN,
    Decision,
    RateLimiter,
    build_rate_limiter,
    open_storage,
    parse_rate_limit,
)
from tally.config import Settings
from tally.services.deadline import Deadline, set_deadline
from tests.cache_servers import BACKENDS, CacheServer, cache_server, cache_url

QUOTA = 5
DAILY = f"{QUOTA}/day"
# Far above any answer of a live server, even on a loaded CI machine (200 ms once timed out a
# plain hit there); the hang test waits this long once.
TIMEOUT_MS = 2000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorded:
    """The decisions counted and the warning lines written by the limiters of one test."""

    def __init__(self) -> None:
        self.decisions: list[tuple[str, str]] = []
        self.warnings: list[dict[str, Any]] = []

    def count(self, backend: str, outcome: str) -> None:
        self.decisions.append((backend, outcome))

    def warn(self, event: str, **fields: Any) -> None:
        self.warnings.append({"event": event, **fields})

    def outcomes(self) -> list[str]:
        return [outcome for _, outcome in self.decisions]


Factory = Callable[..., RateLimiter]  # (url, timeout_ms=TIMEOUT_MS)


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def limiter_on(recorded: Recorded, clock: Clock) -> AsyncIterator[Factory]:
    """Makes limiters of ``DAILY`` on a URL; every one is closed at the end."""
    async with AsyncExitStack() as stack:

        def make(url: str, timeout_ms: int = TIMEOUT_MS) -> RateLimiter:
            item = parse_rate_limit(DAILY)
            assert item is not None
            storage, backend, close = open_storage(url, timeout_ms / 1000)
            limiter = RateLimiter(
                storage,
                item,
                backend=backend,
                timeout=timeout_ms / 1000,
                count=recorded.count,
                clock=clock,
                close=close,
                warn=recorded.warn,
            )
            stack.push_async_callback(limiter.close)
            return limiter

        yield make


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    with cache_url(request.param) as found:
        yield found


@pytest.fixture(params=["redis", "memcached"])
def server(request: pytest.FixtureRequest) -> Iterator[CacheServer]:
    with cache_server(request.param) as running:
        yield running


def new_key() -> str:
    return f"key_{uuid.uuid4().hex}"


async def spend(limiter: RateLimiter, key: str, requests: int) -> list[Decision]:
    return [await limiter.check(key) for _ in range(requests)]


async def test_past_its_quota_a_keys_next_request_is_refused_with_the_wait(
    url: str, limiter_on: Factory, recorded: Recorded
) -> None:
    limiter = limiter_on(url)
    key, other = new_key(), new_key()

    allowed = await spend(limiter, key, QUOTA)
    refused = await limiter.check(key)

    assert [d.outcome for d in allowed] == ["allowed"] * QUOTA
    assert refused.outcome == "limited"
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after is not None
    assert 1 <= refused.retry_after <= 86400
    assert (refused.policy.limit, refused.policy.window) == (QUOTA, 86400)
    assert (await limiter.check(other)).outcome == "allowed"
    backend = url.split(":", 1)[0]
    assert recorded.decisions == [(backend, "allowed")] * QUOTA + [(backend, "limited"), (backend, "allowed")]


async def test_two_limiters_on_one_server_share_the_count(server: CacheServer, limiter_on: Factory) -> None:
    first, second = limiter_on(server.url), limiter_on(server.url)
    key = new_key()

    await spend(first, key, 3)
    await spend(second, key, QUOTA - 3)

    assert (await first.check(key)).outcome == "limited"
    assert (await second.check(key)).outcome == "limited"


async def test_in_process_each_limiter_counts_alone(limiter_on: Factory) -> None:
    first, second = limiter_on("memory://"), limiter_on("memory://")
    key = new_key()

    await spend(first, key, QUOTA)

    assert (await first.check(key)).outcome == "limited"
    assert (await second.check(key)).outcome == "allowed"


async def test_in_process_a_late_event_loop_does_not_switch_limits_off(limiter_on: Factory) -> None:
    timeout_ms = 50
    limiter, key = limiter_on("memory://", timeout_ms), new_key()
    loop = asyncio.get_running_loop()
    outcomes = []
    for _ in range(QUOTA + 1):
        # Something else holds the loop for longer than the limiter's timeout, as under overload.
        loop.call_soon(time.sleep, timeout_ms / 1000 * 2)
        outcomes.append((await limiter.check(key)).outcome)

    assert outcomes == ["allowed"] * QUOTA + ["limited"]


async def test_a_dead_server_lets_requests_pass_counted_and_limiting_resumes_when_it_is_back(
    server: CacheServer, limiter_on: Factory, recorded: Recorded, clock: Clock
) -> None:
    limiter = limiter_on(server.url)
    key = new_key()
    await spend(limiter, key, QUOTA)
    assert (await limiter.check(key)).outcome == "limited"

    server.stop(kill=True)
    while_down = await spend(limiter, key, 3 * QUOTA)
    clock.advance(FAILURE_COOLDOWN + 0.1)  # the backend is asked again, and fails again
    while_down += await spend(limiter, key, 3 * QUOTA)

    assert all(d.allowed and d.outcome == "failed_open" for d in while_down)
    assert recorded.outcomes().count("failed_open") == 6 * QUOTA
    assert len(recorded.warnings) == 2  # one per failed call to the backend, none for the rest
    assert recorded.warnings[0]["backend"] == server.kind
    assert recorded.warnings[1]["failed_open"] == 3 * QUOTA  # the ones passed since the first line

    server.start()  # on the same port, with nothing stored: the counts start over
    assert (await limiter.check(key)).outcome == "failed_open"  # still cooling down
    resumed = await decided(limiter, key, clock)
    resumed += await spend(limiter, key, QUOTA - 1)
    assert [d.outcome for d in resumed] == ["allowed"] * QUOTA
    assert (await limiter.check(key)).outcome == "limited"


async def test_a_hung_server_lets_requests_pass_after_the_timeout_and_limiting_resumes_after_it(
    server: CacheServer, limiter_on: Factory, recorded: Recorded, clock: Clock
) -> None:
    limiter = limiter_on(server.url)
    key = new_key()
    assert (await limiter.check(key)).outcome == "allowed"

    with stopped(server):  # the port still accepts connections, but nothing answers
        while_hung = await spend(limiter, key, 3)

    assert [d.outcome for d in while_hung] == ["failed_open"] * 3
    assert len(recorded.warnings) == 1  # the first call waited out the timeout; the others did not ask
    assert "Timeout" in recorded.warnings[0]["error"]
    assert (await decided(limiter, key, clock))[0].outcome == "allowed"


async def decided(limiter: RateLimiter, key: str, clock: Clock, attempts: int = 10) -> list[Decision]:
    """The first decision the backend makes again: a reconnect may fail once, and the cooldown restarts."""
    for _ in range(attempts):
        clock.advance(FAILURE_COOLDOWN + 0.1)
        decision = await limiter.check(key)
        if decision.outcome != "failed_open":
            return [decision]
    pytest.fail(f"the limiter did not reach its backend again in {attempts} attempts")


@contextmanager
def stopped(server: CacheServer) -> Iterator[None]:
    """Freeze the server's process (SIGSTOP) for the block: a hang, not a crash."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


@pytest.mark.parametrize("text", [None, "off", "OFF", " off ", ""])
def test_off_or_unset_means_no_limiter(text: str | None) -> None:
    assert parse_rate_limit(text) is None
    assert build_rate_limiter(Settings(rate_limit=text)) is None


@pytest.mark.parametrize(
    ("text", "limit", "window"),
    [("1000/second", 1000, 1), ("6000/minute", 6000, 60), ("10/2 seconds", 10, 2), ("5 per hour", 5, 3600)],
)
def test_a_limit_is_read_in_the_limits_notation(text: str, limit: int, window: int) -> None:
    item = parse_rate_limit(text)
    assert item is not None
    assert (item.amount, item.get_expiry()) == (limit, window)


@pytest.mark.parametrize("text", ["fast", "0/second", "10/second;100/minute", "1000"])
def test_anything_else_is_refused_at_start(text: str) -> None:
    with pytest.raises(ValueError, match="TALLY_RATE_LIMIT"):
        parse_rate_limit(text)


def test_an_unknown_backend_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="TALLY_RATE_LIMIT_URL"):
        build_rate_limiter(Settings(rate_limit=DAILY, rate_limit_url="mongodb://localhost:27017"))


async def test_without_a_url_of_its_own_the_limiter_uses_the_cache_server(server: CacheServer) -> None:
    limiter = build_rate_limiter(Settings(rate_limit=DAILY, cache_url=server.url))
    assert limiter is not None
    try:
        assert limiter.backend == server.kind
        assert (await limiter.check(new_key())).outcome == "allowed"
    finally:
        await limiter.close()


async def test_calls_cut_short_by_the_request_budget_leave_the_limiter_working(
    url: str, limiter_on: Factory, clock: Clock
) -> None:
    limiter = limiter_on(url)
    # A fresh limiter, and budgets that run out at every step of a first call, connecting included
    # (a memcachio call cancelled while it connects would lose its pool slot for good).
    for budget in [0.0, 0.00005, 0.0001, 0.0002, 0.0005, 0.001] * 2:
        set_deadline(Deadline.after(budget))
        try:
            assert (await limiter.check(new_key())).allowed
        finally:
            set_deadline(None)
        clock.advance(FAILURE_COOLDOWN + 0.1)

    decisions = await spend(limiter, new_key(), QUOTA + 1)

    assert [d.outcome for d in decisions] == ["allowed"] * QUOTA + ["limited"]
