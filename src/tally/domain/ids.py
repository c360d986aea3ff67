"""Identifiers: time-ordered UUIDv7 values (RFC 9562) behind a readable prefix (ADR 0004).

Time order keeps new rows at the right edge of every index; the prefix tells a reader what an id
names (``acc_…`` is an account). Client-supplied ids share the same column and rules.
"""

from __future__ import annotations

import os
import re
import time
import uuid

CLIENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_client_id = re.compile(CLIENT_ID_PATTERN)

PREFIXES = ("acc", "tr", "evt", "wh", "key", "led", "dlv", "tb", "aud")


def uuid7() -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, then random bits (RFC 9562 section 5.7)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= (rand >> 68 & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return uuid.UUID(int=value)


def new_id(prefix: str) -> str:
    """A fresh server id such as ``acc_0192b3c4d5e67f8091a2b3c4d5e6f708``."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}_{uuid7().hex}"


def is_client_id(value: str) -> bool:
    return _client_id.fullmatch(value) is not None
