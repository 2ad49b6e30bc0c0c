"""Signing in and out, and consumer links."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from tidings.portal.web import (
    Operator,
    PortalError,
    SignedIn,
    checked_form,
    field,
    render,
    safe_next,
    see_other,
    start_session,
    tidings_of,
)
from tidings.web.sessions import (
    COOKIE,
    MAX_LINK_SECONDS,
    SESSION_SECONDS,
    issue_consumer_link,
    signer_of,
)

router = APIRouter(prefix="/portal", include_in_schema=False)


@router.get("/login")
async def login_page(
    request: Request, next: Annotated[str, Query(max_length=2000)] = "/portal/"
) -> Response:
    return await render(request, None, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    plaintext, target = field(form, "api_key"), safe_next(field(form, "next"))
    key = await tidings_of(request).authenticate(plaintext) if plaintext else None
    if key is None or "admin" not in key.scopes:
        error = (
            "That API key is not valid."
            if key is None
            else "The portal needs a key with the admin scope."
        )
        context = {"next": target, "error": error}
        return await render(request, None, "login.html", context, status_code=401)
    response = see_other(target)
    expires_at = time.time() + SESSION_SECONDS
    await start_session(request, response, key.tenant_id, key.id, True, expires_at)
    return response


@router.post("/logout")
async def logout(request: Request, who: SignedIn) -> Response:
    """Ends the session on the server too: the old cookie, replayed, opens nothing."""
    await checked_form(request, who)
    await tidings_of(request).store.sessions.end_session(who.session_id)
    response = see_other("/portal/login")
    response.delete_cookie(COOKIE, path="/portal")
    return response


@router.get("/c/{token}")
async def consumer_link(request: Request, token: str) -> Response:
    """A consumer link opens a session for its tenant that ends when the link does (or at
    sign-out). The link stays valid until it expires and may be followed again."""
    link = signer_of(request).read_link(token)
    if link is None or await tidings_of(request).store.keys.get_tenant(link.tenant_id) is None:
        raise PortalError(403, "This link is not valid or has expired. Ask for a new one.")
    response = see_other("/portal/")
    await start_session(request, response, link.tenant_id, None, link.can_manage, link.expires_at)
    return response


@router.get("/links")
async def links_page(request: Request, who: Operator) -> Response:
    return await render(request, who, "links.html", {"link": None, "max_days": _max_days()})


@router.post("/links")
async def create_link(request: Request, who: Operator) -> Response:
    form = await checked_form(request, who)
    try:
        hours = float(field(form, "hours") or "24")
        url, issued = issue_consumer_link(
            request, who.tenant_id, hours * 3600, field(form, "manage") == "on"
        )
    except ValueError as exc:
        raise PortalError(400, f"Link lifetime: {exc}") from exc
    link = {
        "url": url,
        "expires_ms": int(issued.expires_at * 1000),
        "can_manage": issued.can_manage,
    }
    return await render(request, who, "links.html", {"link": link, "max_days": _max_days()})


def _max_days() -> int:
    return MAX_LINK_SECONDS // 86400
