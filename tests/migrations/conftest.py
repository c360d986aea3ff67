"""Migration tests run on both databases: a fresh SQLite file, and a fresh PostgreSQL database on
the cluster the tests share (a missing PostgreSQL skips them, and fails them in CI)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.integration.postgres_support import fresh_database
from tests.support import BACKENDS

NewDatabase = Callable[[], str]


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NewDatabase]:
    """Makes empty databases of the parameter's kind, as many as a test asks for; returns URLs."""
    made = iter(range(1000))
    with ExitStack() as stack:

        def new() -> str:
            if request.param == "sqlite":
                return f"sqlite:///{tmp_path / f'tally-{next(made)}.db'}"
            cluster = BACKENDS.cluster()
            return cluster.primary.url(stack.enter_context(fresh_database(cluster)))

        yield new


@pytest.fixture
def database_url(new_database: NewDatabase) -> str:
    return new_database()
