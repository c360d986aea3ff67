"""Every security matrix runs on both databases, as the API tests do (``tests/api/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import BACKENDS

ALL = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ALL, indirect=True)


@pytest.fixture(autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    with BACKENDS.using(request.param) as name:
        yield name
