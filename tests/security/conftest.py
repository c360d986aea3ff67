"""Every security matrix runs on both databases, as the API tests do (``tests/api/conftest.py``):
a test that takes ``backend`` runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import BACKENDS

ALL = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ALL, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with BACKENDS.using(request.param) as name:
        yield name
