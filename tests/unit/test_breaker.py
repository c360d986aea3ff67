"""The primary's circuit breaker (``store.breaker``, ADR 0021), on a clock the test moves."""

from __future__ import annotations

from tally.store.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_opens_it_for_the_cooldown_then_one_attempt_may_go_through() -> None:
    clock = Clock()
    breaker = Breaker(cooldown=1.0, longest_cooldown=8.0, clock=clock)
    assert breaker.allows()
    assert breaker.closed
    breaker.failed()
    assert not breaker.allows()
    assert not breaker.closed
    assert breaker.retry_after() == 1
    clock.now += 1.0
    assert breaker.allows()
    breaker.succeeded()
    assert breaker.closed


def test_failures_in_a_row_double_the_cooldown_up_to_the_longest() -> None:
    clock = Clock()
    breaker = Breaker(cooldown=1.0, longest_cooldown=4.0, clock=clock)
    waits = []
    for _ in range(5):
        breaker.failed()
        waits.append(breaker.retry_after())
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 4, 4]


def test_requests_failing_together_while_it_is_open_count_as_one_failure() -> None:
    clock = Clock()
    breaker = Breaker(cooldown=1.0, longest_cooldown=8.0, clock=clock)
    for _ in range(10):  # ten requests in flight when the primary went away
        breaker.failed()
    assert breaker.retry_after() == 1


def test_a_success_of_an_attempt_begun_before_the_latest_failure_does_not_close_it() -> None:
    clock = Clock()
    breaker = Breaker(cooldown=1.0, longest_cooldown=8.0, clock=clock)
    probe_began = breaker.now()  # a health probe is sent; its answer is still on the way
    clock.now += 0.1
    breaker.failed()  # meanwhile a write finds the server gone
    clock.now += 0.1
    breaker.succeeded(probe_began)  # the old answer arrives
    assert not breaker.closed
    assert not breaker.allows()
    clock.now += 1.0
    retry_began = breaker.now()
    breaker.succeeded(retry_began)
    assert breaker.closed
