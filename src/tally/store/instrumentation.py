"""What a database adapter tells about its connections, for whoever measures them.

The store cannot import ``tally.observability`` (they are sibling layers), so it declares what it
reports as a Protocol and the composition root hands it an implementation. Statement timing is not
here: it rides on SQLAlchemy's engine events (``before_cursor_execute``), attached from outside
through ``engines``, and ``role_of`` names the role of the connection a statement ran on.

Roles are ``writer`` and ``reader`` on SQLite; an adapter with replicas adds ``primary`` and
``replica``. Their number is small and fixed, so they are safe as metric labels.
"""

from __future__ import annotations

from typing import Protocol


class ConnectionObserver(Protocol):
    """Told how long each transaction waited for its connection, and while it holds one."""

    def waited(self, role: str, seconds: float) -> None:
        """A transaction of ``role`` waited ``seconds`` for its connection, got it or ran out of time."""

    def holding(self, role: str, delta: int) -> None:
        """A connection of ``role`` was taken (``+1``) or given back (``-1``)."""

    def committed_group(self, members: int) -> None:
        """One SQLite COMMIT made ``members`` write transactions durable (``store.commit_groups``)."""

    def replication(self, primary_up: bool, lags: dict[str, float]) -> None:
        """The replica monitor's last sample: whether the primary answered, each replica's lag."""


class Unobserved:
    """The observer when nothing measures: every report is dropped."""

    def waited(self, role: str, seconds: float) -> None:
        pass

    def holding(self, role: str, delta: int) -> None:
        pass

    def committed_group(self, members: int) -> None:
        pass

    def replication(self, primary_up: bool, lags: dict[str, float]) -> None:
        pass
