"""Who calls in the scope matrix, and what the API documents each of them gets on each access level.

API.md: a missing, malformed, revoked (or expired, or rotated out) key is 401 ``unauthenticated``;
a key without the scope a route needs is 403 ``forbidden``; the root key manages ledgers and keys
only (403 elsewhere); ``write`` implies ``read`` and ``admin`` implies both; ``keys`` routes take
the root key or an admin key of the ledger in the path. Operations routes (``ops``, ``ops_page``)
take the ops token when one is set, ``ops_page`` also as ``?token=``; no ledger key opens them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tally.api.routing import Access

OPS_TOKEN = "ops-token-for-the-scope-matrix"  # noqa: S105 (the test server's, made up here)


class Outcome(Enum):
    ALLOWED = "allowed"  # anything but 401 and 403: the call may still be 404 or 422
    UNAUTHENTICATED = "unauthenticated"  # 401
    FORBIDDEN = "forbidden"  # 403

    @property
    def status(self) -> int | None:
        return {Outcome.UNAUTHENTICATED: 401, Outcome.FORBIDDEN: 403}.get(self)


@dataclass(frozen=True)
class Principal:
    """A caller: the headers and query it sends, and the access levels it passes or is refused at."""

    name: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    allowed: frozenset[Access] = frozenset({Access.PUBLIC})
    forbidden: frozenset[Access] = frozenset()

    def expects(self, level: Access) -> Outcome:
        if level in self.allowed:
            return Outcome.ALLOWED
        if level in self.forbidden:
            return Outcome.FORBIDDEN
        return Outcome.UNAUTHENTICATED


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def with_bad_checksum(secret: str) -> str:
    """``secret`` with its last (checksum) character changed: well formed, refused before any lookup."""
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


def principals(*, root: str, read: str, write: str, admin: str, refused: dict[str, str]) -> list[Principal]:
    """The matrix's callers, from the secrets of real keys of one ledger (and the root key);
    ``refused``: secrets of keys that no longer work, by why (``revoked``, ``expired``, ...)."""
    public = Access.PUBLIC
    ops = frozenset({public, Access.OPS, Access.OPS_PAGE})
    return [
        Principal("no key"),
        Principal("malformed key", {"Authorization": "Bearer not-a-tally-key"}),
        Principal("bad-checksum key", _bearer(with_bad_checksum(admin))),
        *(Principal(f"{why} key", _bearer(secret)) for why, secret in refused.items()),
        Principal(
            "root",
            _bearer(root),
            allowed=frozenset({public, Access.ROOT, Access.KEYS}),
            forbidden=frozenset({Access.READ, Access.WRITE, Access.ADMIN}),
        ),
        Principal(
            "read",
            _bearer(read),
            allowed=frozenset({public, Access.READ}),
            forbidden=frozenset({Access.ROOT, Access.KEYS, Access.WRITE, Access.ADMIN}),
        ),
        Principal(
            "write",
            _bearer(write),
            allowed=frozenset({public, Access.READ, Access.WRITE}),
            forbidden=frozenset({Access.ROOT, Access.KEYS, Access.ADMIN}),
        ),
        Principal(
            "admin",
            _bearer(admin),
            allowed=frozenset({public, Access.READ, Access.WRITE, Access.ADMIN, Access.KEYS}),
            forbidden=frozenset({Access.ROOT}),
        ),
        # The ops token is no ledger key: keyed routes do not know it (401).
        Principal("ops token", _bearer(OPS_TOKEN), allowed=ops),
        Principal(
            "ops token in the query", query={"token": OPS_TOKEN}, allowed=frozenset({public, Access.OPS_PAGE})
        ),
    ]
