"""Wire format of queued transfer batches (``/v1/transfer-batches``): responses and the items' codec.

A queued batch's items and results have exactly the synchronous batch's shape
(``POST /v1/transfers/batch``): the codec reuses that route's parsing and rendering, so the two
cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ValidationError

from tally.api.routes.transfers import batch_item, batch_result
from tally.api.schemas import BatchResultOut, TransferCreate
from tally.domain.errors import FieldError, ValidationFailed
from tally.services.transfers import BatchItem, ItemOutcome
from tally.services.views import JsonObject


class TransferBatchAccepted(BaseModel):
    id: str
    status: Literal["queued"]


class TransferBatchOut(BaseModel):
    id: str
    status: Literal["queued", "processing", "completed", "failed"]
    atomic: bool
    created_at: datetime
    completed_at: datetime | None
    results: list[BatchResultOut] | None = None


def stored_items(transfers: Sequence[TransferCreate]) -> list[dict[str, Any]]:
    """What a queued batch keeps of its transfers: each body as the client sent it, validated."""
    return [transfer.model_dump(mode="json", exclude_unset=True) for transfer in transfers]


class WireBatchCodec:
    """``services.batch_intake.BatchCodec`` in the API's wire format."""

    def items(self, transfers: Sequence[dict[str, Any]]) -> list[BatchItem]:
        return [self._item(raw) for raw in transfers]

    def result(self, outcome: ItemOutcome) -> JsonObject:
        return batch_result(outcome)

    @staticmethod
    def _item(raw: dict[str, Any]) -> BatchItem:
        # Parsed as JSON, like the request that brought it: the same model, the same request hash,
        # so a client id used in a synchronous batch and in a queued one dedupes across both.
        try:
            body = TransferCreate.model_validate_json(orjson.dumps(raw))
        except ValidationError as error:  # stored by an earlier release whose rules were looser
            errors = [FieldError(tuple(e["loc"]), e["msg"]) for e in error.errors()]
            return BatchItem(None, b"", ValidationFailed(errors, "The transfer is not valid."))
        return batch_item(body)
