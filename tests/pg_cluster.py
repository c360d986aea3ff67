"""The PostgreSQL harness (``tally.harness.postgres``) as the tests use it: missing binaries skip.

The same names as the harness. ``require_postgres()``, ``start_cluster()`` and ``cluster()`` skip
the test when the server binaries (or, as root, the ``postgres`` system user) are missing, and fail
it instead in CI (``CI=true``), where their absence is a broken image rather than a choice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tally.harness import postgres
from tally.harness.postgres import (
    HOST,
    SUPERUSER,
    ClusterError,
    PgCluster,
    PgServer,
    PostgresMissing,
    pg_bin_dir,
)

__all__ = [
    "HOST",
    "SUPERUSER",
    "ClusterError",
    "PgCluster",
    "PgServer",
    "cluster",
    "pg_bin_dir",
    "require_postgres",
    "start_cluster",
]


def require_postgres() -> Path:
    """The server binaries' directory; otherwise skip the test, or fail it in CI (CI=true)."""
    try:
        return postgres.find_postgres()
    except PostgresMissing as missing:
        if os.environ.get("CI") == "true":
            pytest.fail(str(missing))
        pytest.skip(str(missing))


def start_cluster(*, replicas: int = 1, durable: bool = False) -> PgCluster:
    """``tally.harness.postgres.start_cluster``, once ``require_postgres`` let the test go on."""
    require_postgres()
    return postgres.start_cluster(replicas=replicas, durable=durable)


@contextmanager
def cluster(*, replicas: int = 1, durable: bool = False) -> Iterator[PgCluster]:
    """``tally.harness.postgres.cluster``, once ``require_postgres`` let the test go on."""
    require_postgres()
    with postgres.cluster(replicas=replicas, durable=durable) as started:
        yield started
