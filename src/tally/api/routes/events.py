"""The event feed: ``GET /v1/events?after=&type=&limit=``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from tally.api.replies import respond_json
from tally.api.routing import Access, TallyRoute, access, ledger_of
from tally.api.schemas import EventPage, EventType, Limit
from tally.services.events import read_feed
from tally.services.views import event_view

router = APIRouter(route_class=TallyRoute, tags=["events"])


@router.get("/v1/events", response_model=EventPage, openapi_extra=access(Access.READ))
async def list_events(
    request: Request,
    after: Annotated[str | None, Query(max_length=64)] = None,
    type: Annotated[list[EventType] | None, Query()] = None,
    limit: Limit = 100,
) -> Response:
    """The ledger's events, oldest first. Pass ``next_cursor`` as ``after`` to continue; an event
    appears only once every transaction that could precede it has ended, so polling never skips one."""
    page = await read_feed(
        request.app.state.tally.database,
        ledger_of(request),
        after=after,
        types=[t.value for t in type] if type else None,
        limit=limit,
    )
    return respond_json(200, {"data": [event_view(e) for e in page.events], "next_cursor": page.next_cursor})
