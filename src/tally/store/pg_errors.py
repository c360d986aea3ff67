"""PostgreSQL failures turned into the error tree (``domain.errors``), by SQLSTATE.

- lost races (``40001`` serialization failure, ``40P01`` deadlock, ``23505`` duplicate key):
  ``TransientConflict``, which the services retry (ADR 0020);
- the budget ran out (``57014`` statement timeout, ``55P03`` lock timeout): ``DeadlineExceeded``;
- the server cannot be reached or is going away (connection errors, ``57P0x``, class ``08``, a
  standby refusing writes ``25006``): ``Unavailable``, and the caller's breaker is told.

Nothing else is translated: any other database error is a bug and surfaces as a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DataError, DBAPIError

from tally.domain.errors import DeadlineExceeded, TransientConflict, Unavailable

_RACES = {"40001", "40P01", "23505"}
_TIMEOUTS = {"57014", "55P03"}
_GONE = {"57P01", "57P02", "57P03", "25006", "53300"}


def sqlstate(error: BaseException) -> str | None:
    found = getattr(error, "orig", error)
    state = getattr(found, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_unreachable(error: BaseException) -> bool:
    """A failure of the connection or the server itself, rather than of one statement."""
    if isinstance(error, OSError | TimeoutError):
        return True
    state = sqlstate(error)
    if state is None:  # no SQLSTATE: the connection failed or was lost ...
        # ... unless the driver refused a value itself (text with U+0000): that is the statement's.
        return isinstance(error, DBAPIError) and not isinstance(error, DataError)
    return state in _GONE or state.startswith("08")


@contextmanager
def translated(server: str) -> Iterator[None]:
    """Raise the error tree's errors for failures of ``server`` (``primary`` or ``replica``)."""
    try:
        yield
    except DBAPIError as error:
        state = sqlstate(error)
        if state in _RACES:
            raise TransientConflict("The transaction collided with another; it was rolled back.") from error
        if state in _TIMEOUTS:
            raise DeadlineExceeded("The time budget ran out; nothing was applied.") from error
        if is_unreachable(error):
            raise Unavailable(f"The {server} database cannot be reached; nothing was applied.") from error
        raise
    except (OSError, TimeoutError) as error:
        raise Unavailable(f"The {server} database cannot be reached; nothing was applied.") from error
