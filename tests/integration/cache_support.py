"""What the cache tests on real `tally serve` processes share: plain clients, cache metrics, waits.

The clients here send no ``Tally-Consistency-Token`` (unlike ``tests.support.client_for``, which
sends back every token it was given): a read carrying a token its cached entry does not cover goes
to the database, which would make a process look up to date without its cache being so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from tests.observability.scrape import Sample, samples, total
from tests.support import Server

T = TypeVar("T")
WAIT_SECONDS = 10.0  # a bound, reached only when a test fails; far below the TTLs these tests set
STEP_SECONDS = 0.02


def plain_client(server: Server) -> httpx.AsyncClient:
    """A client of ``server`` that sends only the headers each request is given."""
    return httpx.AsyncClient(base_url=server.base_url, timeout=30)


async def metrics(client: httpx.AsyncClient) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return samples(response.text)


def lookups(found: list[Sample], cache: str, result: str) -> float:
    """``tally_cache_requests_total`` of ``cache`` (``accounts``, ``api_keys``) with ``result``."""
    return total(found, "tally_cache_requests_total", cache=cache, result=result)


def cache_errors(found: list[Sample]) -> float:
    """Every failed cache call, all operations together."""
    return total(found, "tally_cache_errors_total")


def invalidations(found: list[Sample]) -> float:
    return total(found, "tally_cache_invalidations_total")


async def until(what: str, check: Callable[[], Awaitable[T | None]], within: float = WAIT_SECONDS) -> T:
    """Poll ``check`` until it returns something other than ``None``; return it.

    ``within`` is a bound that only a broken test reaches, never a timing under test.
    """
    deadline = time.monotonic() + within
    while True:
        found = await check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"still waiting after {within} s for {what}"
        await asyncio.sleep(STEP_SECONDS)
