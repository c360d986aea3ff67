"""Conversions between rows and domain values: times as integer microseconds, JSON as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(value: datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def maybe_from_micros(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def maybe_to_micros(value: datetime | None) -> int | None:
    return None if value is None else to_micros(value)


def dump_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def load_json(value: str) -> Any:
    return orjson.loads(value)
