"""Money: integer amounts in a currency's minor unit, and the 64-bit range every balance lives in.

Amounts are never floats (ADR 0002). Balances are stored as signed 64-bit integers on every database,
so every result is checked against that range before it is written: an overflow is refused, never
wrapped.
"""

from __future__ import annotations

import re

from tally.domain.errors import AmountOverflow

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
MAX_AMOUNT = INT64_MAX
CURRENCY_PATTERN = r"^[A-Z][A-Z0-9_]{1,15}$"
_currency = re.compile(CURRENCY_PATTERN)


def is_currency(code: str) -> bool:
    """ISO 4217 codes and custom assets such as ``POINTS``."""
    return _currency.fullmatch(code) is not None


def checked(value: int, what: str = "balance") -> int:
    """Return ``value`` if it fits a signed 64-bit integer, else refuse with ``AmountOverflow``."""
    if value > INT64_MAX or value < INT64_MIN:
        raise AmountOverflow(f"The {what} would leave the 64-bit range.")
    return value
