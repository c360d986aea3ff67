"""Money stays inside the signed 64-bit range; ids are prefixed, time-ordered UUIDv7 values."""

from __future__ import annotations

import time
import uuid

import pytest

from tally.domain.errors import AmountOverflow
from tally.domain.ids import PREFIXES, is_client_id, new_id, uuid7
from tally.domain.money import INT64_MAX, INT64_MIN, checked, is_currency


@pytest.mark.parametrize("value", [0, 1, -1, INT64_MAX, INT64_MIN])
def test_a_value_inside_the_64_bit_range_passes_unchanged(value: int) -> None:
    assert checked(value) == value


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, 2**80])
def test_a_value_outside_the_64_bit_range_is_refused_as_overflow(value: int) -> None:
    with pytest.raises(AmountOverflow):
        checked(value)


@pytest.mark.parametrize("code", ["USD", "EUR", "POINTS", "X1", "A_B_C"])
def test_iso_codes_and_custom_assets_are_currencies(code: str) -> None:
    assert is_currency(code)


@pytest.mark.parametrize("code", ["", "U", "usd", "1USD", "US D", "ABCDEFGHIJKLMNOPQ", "USD\n"])
def test_malformed_codes_are_not_currencies(code: str) -> None:
    assert not is_currency(code)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_new_id_carries_its_prefix_and_a_uuid7(prefix: str) -> None:
    value = new_id(prefix)
    head, _, tail = value.partition("_")
    assert head == prefix
    parsed = uuid.UUID(hex=tail)
    assert parsed.version == 7
    assert tail == parsed.hex


def test_uuid7_sets_the_version_nibble_and_the_rfc_variant() -> None:
    for _ in range(200):
        value = uuid7()
        assert (value.int >> 76) & 0xF == 0x7
        assert (value.int >> 62) & 0b11 == 0b10
        assert value.variant == uuid.RFC_4122


def test_uuid7_carries_the_current_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_ids_made_two_milliseconds_apart_sort_in_creation_order() -> None:
    made = []
    for _ in range(5):
        made.append(new_id("tr"))
        time.sleep(0.002)
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_ids_made_in_one_millisecond_are_still_distinct() -> None:
    made = {uuid7() for _ in range(1000)}
    assert len(made) == 1000


def test_an_unknown_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="nope"):
        new_id("nope")


@pytest.mark.parametrize("value", ["a", "alice", "order:42", "A.b_c-d:9", "x" * 128])
def test_client_ids_of_the_allowed_alphabet_and_length_are_accepted(value: str) -> None:
    assert is_client_id(value)


@pytest.mark.parametrize("value", ["", "x" * 129, "has space", "slash/id", "ümlaut", "nl\n"])
def test_client_ids_outside_the_alphabet_or_length_are_refused(value: str) -> None:
    assert not is_client_id(value)
