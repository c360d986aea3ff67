"""Routes of webhooks (see API.md)."""

from __future__ import annotations

from fastapi import APIRouter

from tally.api.routing import TallyRoute

router = APIRouter(route_class=TallyRoute, tags=["webhooks"])
