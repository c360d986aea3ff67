"""The wire shape of a transfer, and of its times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tally.domain.accounts import Direction
from tally.domain.transfers import Leg, Transfer, TransferStatus
from tally.services.views import timestamp, transfer_view

T0 = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
DEBIT, CREDIT = Direction.DEBIT, Direction.CREDIT


def transfer(*legs: Leg) -> Transfer:
    return Transfer(1, "led_1", "tr_1", TransferStatus.POSTED, legs, None, {}, None, 0, None, T0, T0)


@pytest.mark.parametrize("credit_first", [False, True])
def test_a_two_leg_transfer_also_reads_in_the_simple_form_whatever_its_legs_order(credit_first: bool) -> None:
    legs = [Leg("world", DEBIT, 7, "USD"), Leg("alice", CREDIT, 7, "USD")]
    view = transfer_view(transfer(*(reversed(legs) if credit_first else legs)))

    simple = (view["debit_account_id"], view["credit_account_id"], view["amount"], view["currency"])
    assert simple == ("world", "alice", 7, "USD")
    assert [leg["account_id"] for leg in view["legs"]] == (
        ["alice", "world"] if credit_first else ["world", "alice"]
    )


def test_a_transfer_of_more_legs_reads_in_legs_only() -> None:
    legs = (Leg("world", DEBIT, 10, "USD"), Leg("alice", CREDIT, 4, "USD"), Leg("bob", CREDIT, 6, "USD"))
    view = transfer_view(transfer(*legs))

    assert "amount" not in view
    assert "debit_account_id" not in view
    assert len(view["legs"]) == 3


def test_times_read_in_utc_with_microseconds_whatever_their_zone() -> None:
    east = T0.astimezone(timezone(timedelta(hours=5)))
    assert timestamp(T0) == timestamp(east) == "2026-01-01T12:30:00.000000Z"
    assert timestamp(T0.replace(year=250)) == "0250-01-01T12:30:00.000000Z"
    assert timestamp(None) is None
