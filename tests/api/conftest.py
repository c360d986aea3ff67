"""Every API test runs on both databases: SQLite, and PostgreSQL (a primary and a streaming replica).

``@pytest.mark.backends("sqlite")`` keeps a test on the backends it names, for a test about one
database's own mechanics (a SQLite file lock, say); the PostgreSQL side of such a test has its own
test in ``tests/integration``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import BACKENDS

ALL = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("backend", marker.args if marker else ALL, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with BACKENDS.using(request.param) as name:
        yield name
