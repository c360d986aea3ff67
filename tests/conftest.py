from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    BACKENDS,
    LedgerKeys,
    Server,
    asgi_client,
    client_for,
    new_ledger,
    settings_for,
    start_server,
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The lines tests record under the user property ``summary`` (the case counts of the fuzz tests
    and the security matrices), read from the reports so that they show under pytest-xdist too."""
    lines = sorted(
        value
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == "summary"
    )
    if lines:
        terminalreporter.write_sep("-", "summary lines")
        for line in lines:
            terminalreporter.write_line(str(line))


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_cluster() -> Iterator[None]:
    """The PostgreSQL cluster the tests share is started on first use; stop it when they are done."""
    yield
    BACKENDS.stop()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh Tally app (ASGI, in process) on its own SQLite file."""
    async with asgi_client(settings_for(tmp_path)) as c:
        yield c


@pytest.fixture
async def ledger(client: httpx.AsyncClient) -> LedgerKeys:
    return await new_ledger(client)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A real ``tally serve`` process on loopback, on its own SQLite file."""
    running = start_server(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def server_client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(server.base_url) as c:
        yield c


@pytest.fixture(params=["asgi", "server"])
async def any_client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The same test twice: over ASGI in process, and against a real ``tally serve`` process."""
    if request.param == "asgi":
        async with asgi_client(settings_for(tmp_path)) as c:
            yield c
        return
    running = start_server(tmp_path)
    try:
        async with client_for(running.base_url) as c:
            yield c
    finally:
        running.stop()
