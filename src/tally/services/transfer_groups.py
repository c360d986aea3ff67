"""Concurrent single transfers coalesced into one write transaction (group commit, ADR 0042).

Each ``POST /v1/transfers`` queues here. A runner task takes everything queued (up to ``limit``)
and writes it as ``transfers.create_transfers`` does: one transaction, one statement per table,
each request decided alone against what the ones before it did, each with its own idempotency
record and outbox row. While a group's transaction and COMMIT run, the next requests queue, so an
idle service writes each transfer at once and a busy one amortises the statements, the round
trips and the commit over the queue. Nothing waits on a timer.

What each request still gets as if it ran alone (``IdempotentExecutor``):
- its key is claimed in flight before it queues (``IdempotencyKeyInUse``) and released only when
  its transfer's transaction has ended, even if the request itself was cancelled meanwhile;
- its reply is its own: created, a replay, a stored rejection, or ``IdempotencyKeyReused``; and it
  gets it only after the COMMIT;
- a request cancelled while still queued is withdrawn, and nothing of it is applied;
- its budget: a group runs within the earliest deadline of its members, and a member already past
  its deadline is not put in a group. If the group's transaction fails as a whole (a conflict past
  its retries, a budget, the database), nothing of it was applied, and every member runs again
  alone, through the executor, with its own budget: a member's failure is then its own.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tally.domain.errors import DeadlineExceeded, TallyError
from tally.services.deadline import Deadline, current_deadline, set_deadline
from tally.services.idempotency import Action, IdempotentExecutor, Outcome
from tally.services.ports import Database
from tally.services.retries import retry_conflicts
from tally.services.transfers import KeyedTransfer, create_transfers

# A request queued this long while every runner is busy gets another runner, up to the most
# allowed (PostgreSQL): a group stuck on a row lock holds up the others this long at most.
STUCK_SECONDS = 0.05

# A group's IN lists (its keys, accounts, client ids) stay within the lengths whose statements are
# bound once (store.statement_plans); past a few dozen members the amortised share is small anyway.
MOST_MEMBERS = 32


class _Alone:
    """A member's answer when its group failed as a whole: run the request alone."""


ALONE = _Alone()
Result = Outcome | TallyError | _Alone


class StatementCount(Protocol):
    def add(self, other: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class GroupHooks:
    """Observability's part, given by the bootstrap (the services know none of it)."""

    runner_context: Callable[[], contextvars.Context]  # a fresh context for a runner: its lines' job
    request_count: Callable[[], StatementCount | None]  # the statement count of this context's request
    # A group begins in this context: its members' request ids go on its lines; its statement count.
    group_began: Callable[[tuple[str, ...]], StatementCount | None]
    written: Callable[[int], None]  # a group of this many transfers was written


@dataclass(eq=False, slots=True)
class _Queued:
    member: KeyedTransfer
    deadline: Deadline | None
    queries: StatementCount | None  # the request's statement count (its access line's db_queries)
    since: float  # event-loop time it was queued
    future: asyncio.Future[Result] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


async def _let_members_answer() -> None:
    """Two turns of the event loop before the next group, so that the members just written answer
    first: in the first, their (shielded) futures pass the result on; in the second, each member's
    task resumes and sends its response. Otherwise the next group's statements, which do not yield,
    run before any of them, and each member waits a whole group longer than its own."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class TransferGroups:
    """The queue of single transfers and the task that writes them in groups."""

    def __init__(
        self,
        database: Database,
        executor: IdempotentExecutor,
        *,
        limit: int = MOST_MEMBERS,
        runners: int = 1,
        hooks: GroupHooks | None = None,
    ) -> None:
        if not 1 <= limit <= MOST_MEMBERS:
            raise ValueError(f"a group holds 1 to {MOST_MEMBERS} transfers, not {limit}")
        self._database = database
        self._executor = executor
        self._limit = limit
        self._most_runners = runners
        self._hooks = hooks
        self._queue: deque[_Queued] = deque()
        self._runners: set[asyncio.Task[None]] = set()
        self._watch: asyncio.TimerHandle | None = None  # the check for a queue no runner takes

    @property
    def queued(self) -> int:
        """Requests waiting for the next group."""
        return len(self._queue)

    async def create(self, member: KeyedTransfer, alone: Action) -> Outcome:
        """``member``'s outcome, written in a group; ``alone`` is its action should it run alone."""
        slot = self._executor.claim(member.ledger_id, member.key)
        loop = asyncio.get_running_loop()
        counted = self._hooks.request_count() if self._hooks else None
        queued = _Queued(member, current_deadline(), counted, loop.time())
        self._queue.append(queued)
        if not self._runners:
            self._start_runner()
        elif len(self._runners) < self._most_runners and self._watch is None:
            self._watch = loop.call_later(STUCK_SECONDS, self._check_stuck)
        try:
            result = await self._answer(queued)
        except (asyncio.CancelledError, DeadlineExceeded):
            if queued in self._queue:  # not in a group yet: withdrawn, nothing applied
                self._queue.remove(queued)
                self._executor.release(slot)
            else:  # its group goes on: the key stays in flight until that transaction ends
                queued.future.add_done_callback(lambda _: self._executor.release(slot))
            raise
        try:
            if isinstance(result, _Alone):
                return await self._executor.run_claimed(member.ledger_id, member.key, alone, member.reject)
            if isinstance(result, TallyError):
                raise result
            return result
        finally:
            self._executor.release(slot)

    async def _answer(self, queued: _Queued) -> Result:
        """The group's answer; ``DeadlineExceeded`` if the budget ends while still queued (a group
        under way ends within its members' earliest deadline, so it is waited for)."""
        if queued.deadline is None:
            return await asyncio.shield(queued.future)
        try:
            async with asyncio.timeout(queued.deadline.remaining()):
                return await asyncio.shield(queued.future)
        except TimeoutError:
            if queued in self._queue:
                raise DeadlineExceeded(
                    "The time budget ran out while this transfer waited to be written; nothing was applied."
                ) from None
            return await asyncio.shield(queued.future)

    def _start_runner(self) -> None:
        # A context of its own: no request's id, budget or reads carry into the groups.
        context = self._hooks.runner_context() if self._hooks else contextvars.Context()
        runner = asyncio.get_running_loop().create_task(
            self._run(), name="tally-transfer-groups", context=context
        )
        self._runners.add(runner)

    def _check_stuck(self) -> None:
        """One more runner if the oldest queued request has waited ``STUCK_SECONDS`` (the runners are
        all busy: one of them may be waiting for a lock); checked again while requests queue."""
        self._watch = None
        if not self._queue or len(self._runners) >= self._most_runners:
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - self._queue[0].since
        if waited >= STUCK_SECONDS:
            self._start_runner()  # it takes the queue as it is now
            waited = 0.0
        if len(self._runners) < self._most_runners:
            self._watch = loop.call_later(STUCK_SECONDS - waited, self._check_stuck)

    async def stop(self) -> None:
        """Wait for the groups under way (their members wait for them too)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        await asyncio.gather(*self._runners, return_exceptions=True)

    async def _run(self) -> None:
        me = asyncio.current_task()
        try:
            while self._queue:
                group = [self._queue.popleft() for _ in range(min(self._limit, len(self._queue)))]
                await self._write(group)
                if self._queue:
                    await _let_members_answer()
        finally:
            self._runners.discard(me)
            if not self._runners:  # only if this task was cancelled: each runs alone
                for queued in self._queue:
                    if not queued.future.done():
                        queued.future.set_result(ALONE)

    async def _write(self, group: list[_Queued]) -> None:
        live: list[_Queued] = []
        for queued in group:
            if queued.deadline is not None and queued.deadline.remaining() <= 0:
                queued.future.set_result(ALONE)  # alone, it ends with its own DeadlineExceeded
            else:
                live.append(queued)
        if not live:
            return
        deadlines = [queued.deadline for queued in live if queued.deadline is not None]
        set_deadline(min(deadlines, key=lambda deadline: deadline.at) if deadlines else None)
        members = [queued.member for queued in live]
        request_ids = tuple(member.request_id for member in members if member.request_id is not None)
        queries = self._hooks.group_began(request_ids) if self._hooks else None
        results: list[Outcome | TallyError] | None = None
        try:
            results = await retry_conflicts(lambda: self._transaction(members))
            if self._hooks is not None:
                self._hooks.written(len(members))
        except Exception:  # it applied nothing, or its members' keys replay: each member runs alone
            results = None
        finally:
            for i, queued in enumerate(live):
                if queued.queries is not None and queries is not None:  # the statements that wrote it
                    queued.queries.add(queries)
                if not queued.future.done():
                    queued.future.set_result(ALONE if results is None else results[i])

    async def _transaction(self, members: list[KeyedTransfer]) -> list[Outcome | TallyError]:
        async with self._database.write() as tx:
            return await create_transfers(tx, members)
