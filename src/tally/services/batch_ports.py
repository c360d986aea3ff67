"""The port of asynchronous transfer batches (``POST /v1/transfer-batches``, API.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class QueuedBatch:
    pk: int
    id: str
    ledger_id: str
    status: str  # queued | processing | completed | failed
    atomic: bool
    request: list[dict[str, Any]]  # the submitted transfers
    results: list[dict[str, Any]] | None
    request_id: str | None
    created_at: datetime
    completed_at: datetime | None


class TransferBatchRepository(Protocol):
    async def add(self, batch: QueuedBatch) -> QueuedBatch: ...
    async def get(self, ledger_id: str, batch_id: str) -> QueuedBatch | None: ...
    async def get_by_pk(self, pk: int) -> QueuedBatch | None: ...
    async def save(self, batch: QueuedBatch) -> None:
        """Store the batch's status, results and completion time."""
        ...
