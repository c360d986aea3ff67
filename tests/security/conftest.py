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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The number of cases each matrix generated, shown at the end of every run (with or without
    ``-s``, also from xdist workers): the tests record it as the ``matrix`` property."""
    lines = [
        f"{report.nodeid}: {value}"
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        for name, value in getattr(report, "user_properties", [])
        if name == "matrix" and report.when == "call"
    ]
    if lines:
        terminalreporter.write_sep("-", "security matrices")
        for line in lines:
            terminalreporter.write_line(line)
