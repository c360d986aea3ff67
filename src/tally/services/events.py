"""The event feed: a ledger's outbox, oldest first, that a polling consumer can never skip in (ADR 0024)."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from tally.domain.errors import ValidationFailed
from tally.services.ports import Database, Event, FeedPosition


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: list[Event]
    next_cursor: str | None  # the last event's id; with no new event, the ``after`` given


async def read_feed(
    database: Database, ledger_id: str, *, after: str | None, types: Sequence[str] | None, limit: int
) -> FeedPage:
    async with database.read() as tx:
        position = None
        if after is not None:
            found = await tx.events.position_of(after)
            if found is None or found[0] != ledger_id:
                raise ValidationFailed.at(("query", "after"), "No event of this ledger has this id.")
            position = found[1]
        events = await tx.events.feed(ledger_id, position, types, limit)
    return FeedPage(events, events[-1].id if events else after)


async def feed_tail(database: Database) -> FeedPosition | None:
    """Where the feed of every ledger ends now: a consumer starting here sees only later events."""
    async with database.read() as tx:
        return await tx.events.tail()


async def events_after(
    database: Database, after: FeedPosition | None, types: Sequence[str], limit: int, skip: Container[int]
) -> tuple[list[FeedPosition], list[Event]]:
    """The positions of the next ``limit`` events of every ledger after ``after``, in feed order, and
    those events but the ones whose pk is in ``skip``, which are never read (internal consumers)."""
    async with database.read() as tx:
        positions = await tx.events.positions(after, types, limit)
        wanted = [position.pk for position in positions if position.pk not in skip]
        return positions, await tx.events.get_many(wanted) if wanted else []
