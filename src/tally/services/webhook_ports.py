"""The ports of webhooks: subscriptions and their deliveries (API.md, ADR 0025)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from tally.services.ports import Page


@dataclass(frozen=True, slots=True)
class Webhook:
    pk: int
    id: str
    ledger_id: str
    url: str
    event_types: tuple[str, ...]  # ("*",) for every type
    max_per_second: int | None
    secret: bytes  # the signing secret, encrypted at rest
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class Delivery:
    pk: int
    id: str
    webhook_pk: int
    event_pk: int
    status: str  # pending | retrying | delivered | dead
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class WebhookRepository(Protocol):
    async def add(self, webhook: Webhook) -> Webhook: ...
    async def get(self, ledger_id: str, webhook_id: str) -> Webhook | None:
        """A subscription that is not deleted."""
        ...

    async def get_by_pk(self, pk: int) -> Webhook | None: ...
    async def list(self, ledger_id: str, *, after: int | None, limit: int) -> Page[Webhook]: ...
    async def delete(self, ledger_id: str, webhook_id: str, at: datetime) -> bool: ...
    async def subscribed(self, ledger_id: str, event_type: str) -> Sequence[Webhook]:
        """The ledger's live subscriptions to ``event_type``."""
        ...

    async def take_slot(self, pk: int, interval: timedelta, at: datetime) -> datetime:
        """Reserve the subscription's next send slot (a rate of one per ``interval``); when it is."""
        ...


class DeliveryRepository(Protocol):
    async def add(self, webhook_pk: int, event_pk: int, at: datetime) -> int | None:
        """A pending delivery of the event to the subscription; ``None`` when it exists already."""
        ...

    async def get(self, pk: int) -> Delivery | None: ...
    async def list(
        self, webhook_pk: int, *, status: str | None, after: int | None, limit: int
    ) -> Page[Delivery]: ...
    async def record_attempt(
        self,
        delivery_pk: int,
        attempt: int,
        at: datetime,
        *,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        outcome: str,
    ) -> None:
        """Log one attempt and move the delivery to ``outcome`` (retrying, delivered or dead)."""
        ...

    async def attempts(self, delivery_pk: int) -> Sequence[dict[str, Any]]:
        """The delivery's attempts, oldest first: attempt, at, status_code, error, duration_ms."""
        ...

    async def dead(self, webhook_pk: int) -> Sequence[int]:
        """The pks of the subscription's dead deliveries."""
        ...

    async def revive(self, delivery_pks: Sequence[int], at: datetime) -> None:
        """Dead deliveries back to pending (redrive)."""
        ...
