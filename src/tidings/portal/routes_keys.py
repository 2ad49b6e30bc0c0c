"""API keys: an operator lists the tenant's keys, creates one (shown once) and revokes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tidings.portal.web import (
    Operator,
    PortalError,
    checked_form,
    render,
    see_other,
    tidings_of,
)
from tidings.service import KEY_CACHE_SECONDS, SCOPES, Invalid
from tidings.storage import Revocation
from tidings.web.sessions import Viewer

router = APIRouter(prefix="/portal", include_in_schema=False)


async def _page(
    request: Request, who: Viewer, extra: dict[str, Any], status_code: int = 200
) -> Response:
    keys = await tidings_of(request).store.keys.list_api_keys(who.tenant_id)
    context = {
        "keys": list(reversed(keys)),  # newest first
        "scopes": sorted(SCOPES),
        "cache_seconds": f"{KEY_CACHE_SECONDS:g}",
        "new_key": None,
        "error": None,
        **extra,
    }
    return await render(request, who, "keys.html", context, status_code=status_code)


@router.get("/keys")
async def keys_page(request: Request, who: Operator) -> Response:
    return await _page(request, who, {})


@router.post("/keys")
async def create_key(request: Request, who: Operator) -> Response:
    form = await checked_form(request, who)
    scopes = sorted({value for value in form.getlist("scope") if isinstance(value, str)})
    try:
        _, plaintext = await tidings_of(request).create_tenant_key(who.tenant_id, scopes)
    except Invalid as exc:
        return await _page(request, who, {"error": f"Choose at least one scope: {exc}"}, 422)
    return await _page(request, who, {"new_key": plaintext}, 201)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, who: Operator) -> Response:
    """Revoking the key this session signed in with ends this session too."""
    await checked_form(request, who)
    revoked = await tidings_of(request).revoke_api_key(key_id, who.tenant_id)
    if revoked.outcome is Revocation.NOT_FOUND:
        raise PortalError(404, "No such API key.")
    if revoked.outcome is Revocation.LAST_ADMIN:
        raise PortalError(
            409,
            "This is the tenant's last admin key: create another admin key first, "
            "or the tenant could not manage its keys any more.",
        )
    return see_other("/portal/login" if key_id == who.key_id else "/portal/keys")
