"""The pure parts of batch jobs: periods and their schedules, the progress bar, holder liveness."""

from __future__ import annotations

import io
import os
import socket
from datetime import UTC, datetime, timedelta

import pytest

from tally.jobs.progress import TerminalProgress
from tally.jobs.runs import holder_is_gone, new_owner
from tally.jobs.schedule import DAILY_AFTER_MIDNIGHT, EVERY_MINUTE, HOURLY

NOW = datetime(2026, 3, 10, 0, 3, 30, tzinfo=UTC)


def test_the_period_due_is_the_last_one_that_ended_plus_the_grace() -> None:
    assert EVERY_MINUTE.due(NOW) == "2026-03-10T00:02"
    assert HOURLY.due(NOW) == "2026-03-09T23"
    assert DAILY_AFTER_MIDNIGHT.due(NOW) == "2026-03-08"  # 00:05 has not come: yesterday is not due
    assert DAILY_AFTER_MIDNIGHT.due(NOW + timedelta(minutes=2)) == "2026-03-09"


def test_a_period_is_checked_and_must_have_ended() -> None:
    assert HOURLY.period(" 2026-03-09T22 ", NOW) == "2026-03-09T22"
    assert HOURLY.bounds("2026-03-09T22") == (
        datetime(2026, 3, 9, 22, tzinfo=UTC),
        datetime(2026, 3, 9, 23, tzinfo=UTC),
    )
    with pytest.raises(ValueError, match="has not ended yet"):
        HOURLY.period("2026-03-10T00", NOW)
    with pytest.raises(ValueError, match="named like 2026-01-31T13"):
        HOURLY.period("2026-03-09", NOW)
    with pytest.raises(ValueError, match="canonically"):
        DAILY_AFTER_MIDNIGHT.period("2026-3-9", NOW)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bar_shows_percent_counts_rate_and_eta_and_redraws_at_most_ten_times_a_second() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = TerminalProgress(stream, tty=True, clock=clock)
    bar.start("purge-idempotency-keys", "2026-03-09T23", "keys", 0, 1000)
    clock.now += 2.0
    bar.update(250)
    assert bar.line() == (
        "purge-idempotency-keys 2026-03-09T23  [########......................]  25%  "
        "250/1,000 keys  125/s  ETA 0:00:06"
    )
    drawn = stream.getvalue().count("\r")
    clock.now += 0.05
    bar.update(260)  # within a tenth of a second of the last draw: not drawn
    assert stream.getvalue().count("\r") == drawn
    clock.now += 0.06
    bar.update(300)
    assert stream.getvalue().count("\r") == drawn + 1
    bar.finish()
    assert stream.getvalue().endswith("\n")


def test_an_unknown_total_is_a_counter_and_no_tty_writes_no_bar() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = TerminalProgress(stream, tty=False, clock=clock)
    bar.start("expire-holds", "2026-03-10T00:02", "holds", 0, None)
    clock.now += 4.0
    bar.update(40)
    assert bar.line() == "expire-holds 2026-03-10T00:02  40 holds  10/s"
    bar.finish()
    assert stream.getvalue() == ""  # off a terminal the progress goes to the log, now and then


def test_only_a_gone_process_of_this_host_counts_as_gone() -> None:
    assert not holder_is_gone(new_owner())  # this process
    assert not holder_is_gone(f"{socket.gethostname()}-elsewhere:1:abc")
    assert not holder_is_gone(f"{socket.gethostname()}:{os.getppid()}:abc")
    assert holder_is_gone(f"{socket.gethostname()}:{2**22 + 7}:abc")  # above pid_max: never a process
