"""Ledgers, API keys and their secrets.

A key's secret is ``tally_<kind>_<30 random base62 chars><6 base62 chars of CRC-32>``: the prefix
lets secret scanners spot a leaked key, and the checksum lets a mistyped key be refused before any
database work. Only the SHA-256 of a secret is stored: secrets are 178 random bits, so a slow hash
adds nothing (ADR 0008).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_CHARS = 30
_CHECK_CHARS = 6
_secret = re.compile(rf"^tally_(root|key)_([0-9A-Za-z]{{{_RANDOM_CHARS}}})([0-9A-Za-z]{{{_CHECK_CHARS}}})$")
# What a secret scanner searches text for; ``secret_kind`` then tells a real key from a look-alike.
LEAKED_KEY_PATTERN = rf"\btally_(?:root|key)_[0-9A-Za-z]{{{_RANDOM_CHARS + _CHECK_CHARS}}}\b"


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


_IMPLIED = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.WRITE: frozenset({Scope.READ, Scope.WRITE}),
    Scope.ADMIN: frozenset({Scope.READ, Scope.WRITE, Scope.ADMIN}),
}


def effective_scopes(granted: frozenset[Scope]) -> frozenset[Scope]:
    """``write`` implies ``read``; ``admin`` implies both."""
    result: frozenset[Scope] = frozenset()
    for scope in granted:
        result |= _IMPLIED[scope]
    return result


@dataclass(frozen=True, slots=True)
class Ledger:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    ledger_id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    secret_hash: bytes
    expires_at: datetime | None = None  # refused from this moment on (ADR 0036)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_CHARS)


def new_secret(kind: str) -> str:
    """A fresh secret of ``kind`` ``root`` or ``key``."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    return f"tally_{kind}_{body}{_checksum(body)}"


def secret_kind(secret: str) -> str | None:
    """``root`` or ``key`` for a well-formed secret with a valid checksum, else ``None``."""
    match = _secret.fullmatch(secret)
    if match is None or not hmac.compare_digest(_checksum(match.group(2)), match.group(3)):
        return None
    return match.group(1)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
