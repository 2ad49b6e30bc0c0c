"""Consumer links to the portal, for operators who hand them out programmatically."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request

from tidings.api.auth import Admin
from tidings.api.schemas import CreatePortalLink, PortalLink, utc
from tidings.web.sessions import issue_consumer_link

router = APIRouter(prefix="/api/v1/portal", tags=["portal"])


@router.post("/links", status_code=201, response_model=PortalLink)
async def create_link(
    http: Request, key: Admin, request: Annotated[CreatePortalLink | None, Body()] = None
) -> PortalLink:
    """A signed, expiring link that opens the portal on this key's tenant only: its
    subscriptions and delivery logs, for that tenant's customer. No API key needed."""
    options = request or CreatePortalLink()
    url, link = issue_consumer_link(http, key.tenant_id, options.ttl_seconds, options.can_manage)
    return PortalLink(
        url=url, expires_utc=utc(int(link.expires_at * 1000)), can_manage=link.can_manage
    )
