"""The wire format of the audit trail: the shape of a record and of a page of them (ADR 0036)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from tally.services.audit import AuditAction, AuditEvent
from tally.services.views import JsonObject, timestamp


class AuditOrder(StrEnum):
    NEWEST = "newest"  # newest first, the default: what an investigation reads first
    OLDEST = "oldest"


class AuditEventOut(BaseModel):
    id: str = Field(description="`aud_…`")
    action: AuditAction
    target_type: str = Field(description="What was acted on: `ledger`, `key`, `webhook` or `account`.")
    target_id: str
    actor_key_id: str = Field(description="The id of the key that acted; `root` for the root key.")
    request_id: str | None = Field(description="The `X-Request-ID` of the request that acted.")
    at: datetime = Field(description="The database time of the act (its transaction's time).")
    details: dict[str, Any] = Field(
        description="What changed (old and new values, scopes, expiry); never a secret."
    )


class AuditEventPage(BaseModel):
    data: list[AuditEventOut]
    next_cursor: str | None


def audit_event_view(event: AuditEvent) -> JsonObject:
    return {
        "id": event.id,
        "action": event.action.value,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "actor_key_id": event.actor_key_id,
        "request_id": event.request_id,
        "at": timestamp(event.at),
        "details": event.details,
    }
