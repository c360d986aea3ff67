"""The wire format of webhooks: subscription bodies, and the shapes of subscriptions and deliveries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from tally.api.schemas import EventType, Strict
from tally.services.views import JsonObject, timestamp
from tally.services.webhook_ports import Webhook
from tally.services.webhooks import DeliveryRecord

MAX_URL_LENGTH = 2048
MAX_PER_SECOND = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Url = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_URL_LENGTH)]


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # queued, not attempted yet
    RETRYING = "retrying"  # failed at least once; another attempt is scheduled
    DELIVERED = "delivered"  # a 2xx answered
    DEAD = "dead"  # out of attempts (or its subscription was deleted): redrive to try again


class WebhookCreate(Strict):
    url: Url = Field(
        description="https:// (or http://) URL without credentials, whose host resolves only to public "
        "addresses unless TALLY_WEBHOOK_ALLOWED_HOSTS allows it.",
        examples=["https://example.com/hooks/tally"],
    )
    event_types: list[EventType | Literal["*"]] = Field(
        min_length=1,
        max_length=len(EventType),
        description='The event types to deliver, or ["*"] for every type (present and future).',
    )
    max_per_second: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=MAX_PER_SECOND,
        description="At most this many deliveries per second to this subscription (null: no limit).",
    )

    @field_validator("event_types")
    @classmethod
    def _distinct(cls, value: list[EventType | Literal["*"]]) -> list[EventType | Literal["*"]]:
        if "*" in value and len(value) > 1:
            raise ValueError('"*" stands alone: it already means every type')
        if len(set(value)) != len(value):
            raise ValueError("each event type at most once")
        return value

    def types(self) -> list[str]:
        return [str(t.value) if isinstance(t, EventType) else t for t in self.event_types]


class WebhookOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    max_per_second: int | None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str | None = Field(
        description="The signing secret (whsec_…), shown this once; null in an idempotent replay."
    )


class WebhookPage(BaseModel):
    data: list[WebhookOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None = Field(description="The receiver's status; null when no response came back.")
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: str
    event_id: str | None
    event_type: str | None
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    attempt_log: list[AttemptOut] = Field(description="Every attempt, oldest first.")


class DeliveryPage(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None


class RedriveOut(BaseModel):
    redriven: int = Field(description="Dead deliveries queued again.")


def webhook_view(webhook: Webhook) -> JsonObject:
    return {
        "id": webhook.id,
        "url": webhook.url,
        "event_types": list(webhook.event_types),
        "max_per_second": webhook.max_per_second,
        "created_at": timestamp(webhook.created_at),
    }


def delivery_view(record: DeliveryRecord) -> JsonObject:
    delivery, event = record.delivery, record.event
    return {
        "id": delivery.id,
        "event_id": None if event is None else event.id,
        "event_type": None if event is None else event.type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": timestamp(delivery.created_at),
        "updated_at": timestamp(delivery.updated_at),
        "delivered_at": timestamp(delivery.delivered_at),
        "attempt_log": [
            {
                "attempt": a["attempt"],
                "at": timestamp(_from_micros(a["at"])),
                "status_code": a["status_code"],
                "error": a["error"],
                "duration_ms": a["duration_ms"],
            }
            for a in record.attempts
        ],
    }


def _from_micros(value: Any) -> datetime | None:
    """An attempt's time as the store keeps it (microseconds since the epoch, UTC)."""
    if isinstance(value, datetime) or value is None:
        return value
    return _EPOCH + timedelta(microseconds=int(value))
