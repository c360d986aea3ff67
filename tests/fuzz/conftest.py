"""Each fuzz test runs on both databases: SQLite, and PostgreSQL (a primary and a streaming replica)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import BACKENDS


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with BACKENDS.using(request.param) as name:
        yield name
