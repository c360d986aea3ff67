"""The audit trail of a ledger: ``GET /v1/audit-events`` (``admin``, ADR 0036)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tally.api.audit_schemas import AuditEventPage, AuditOrder, audit_event_view
from tally.api.replies import decode_cursor, page_reply
from tally.api.routing import Access, TallyRoute, access, ledger_of
from tally.api.schemas import Cursor, Limit
from tally.services.audit import AuditAction, list_audit_events

router = APIRouter(route_class=TallyRoute, tags=["audit"])


@router.get("/v1/audit-events", response_model=AuditEventPage, openapi_extra=access(Access.ADMIN))
async def list_audit(
    request: Request,
    limit: Limit = 100,
    cursor: Cursor = None,
    action: AuditAction | None = None,
    order: AuditOrder = AuditOrder.NEWEST,
) -> Response:
    """The calling key's ledger's administrative acts — ledger created; keys created, rotated,
    revoked; webhooks created, deleted; accounts frozen, unfrozen, closed, bounds changed — newest
    first (`order=oldest` for the other way), of one `action` when given. Pass `next_cursor` as
    `cursor` with the same `order` to continue. Records are append-only: the database refuses to
    change or delete one."""
    page = await list_audit_events(
        request.app.state.tally.database,
        ledger_of(request),
        action=action,
        after=decode_cursor(cursor),
        newest_first=order is AuditOrder.NEWEST,
        limit=limit,
    )
    return page_reply(page, audit_event_view)
