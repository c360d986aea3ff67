"""Group commit on SQLite: write transactions that queue for the writer share one COMMIT.

SQLite has one writer, and each COMMIT costs a thread hop and an fsync. While one commit is under
way, the next writers wait for the writer lock anyway; group commit lets each of them run in a
``SAVEPOINT`` of one open transaction, one after the other under the lock as before, and commits
them together once nobody else is queued (or ``limit`` have joined). Nothing waits on a timer: an
idle database commits each write at once, a busy one amortises the commit over the queue.

Who commits: the member that finds nobody queued behind it, at the end of its savepoint, still
holding the writer lock (the COMMIT itself runs in a worker thread, so SQLite's file lock is never
held waiting for the event loop). A member that leaves the group open for the writers queued
behind it also starts a committer task, queued for the lock like a writer, for the case where each
of those gives up waiting; usually it finds the group committed and leaves.

Isolation between the members of a group:
- a member that fails (a rejection, a conflict, a budget) is rolled back to its savepoint and
  raises alone; the others commit;
- a failure that ends SQLite's whole transaction (an interrupted write statement, a full disk, an
  I/O error) breaks the group: every member fails with ``TransientConflict``, nothing of the
  group is applied, and the services run each member again in a new transaction (ADR 0020), as
  after any lost race; past the attempts the client gets 503 and retries with its key;
- each member's idempotency record and outbox row are its own rows in its savepoint, so they
  commit exactly with its effect; and each member returns from ``write()`` only after the COMMIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tally.domain.errors import TransientConflict


class CommitGroup:
    """The members of one open SQLite transaction, and what their COMMIT tells them."""

    __slots__ = ("done", "events", "failure", "followed", "members", "queues")

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.members = 0
        self.events: list[int] = []  # the pks of the outbox events its members wrote
        self.queues = False  # a member queued jobs or deliveries: wake the workers after the commit
        self.failure: BaseException | None = None  # set when the group broke or its COMMIT failed
        self.followed = False  # a committer task waits to commit it if no member does

    def joined(self, events: Sequence[int], queues: bool) -> None:
        """A member's savepoint was released: its rows are part of the group's transaction."""
        self.members += 1
        self.events.extend(events)
        self.queues = self.queues or queues

    @property
    def last_event(self) -> int:
        return max(self.events, default=0)

    def broke(self, error: BaseException) -> None:
        """SQLite rolled the whole transaction back under a member: the group cannot commit."""
        if self.failure is None:
            self.failure = error

    def settle(self, failure: BaseException | None = None) -> None:
        if failure is not None and self.failure is None:
            self.failure = failure
        if not self.done.done():
            self.done.set_result(None)

    async def committed(self) -> None:
        """Wait for the group's COMMIT; raise ``TransientConflict`` if it did not happen.

        Shielded: a member cancelled while it waits leaves the group's outcome to the others.
        """
        await asyncio.shield(self.done)
        if self.failure is not None:
            raise TransientConflict(
                "The database transaction this write shared with others failed; nothing was applied."
            ) from self.failure
