"""A tenant's API keys, for its admin keys: list, create (shown once), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tidings.api.auth import Admin, TidingsDep
from tidings.api.schemas import ApiKeyOut, CreateApiKey, CreatedApiKey
from tidings.storage import Revocation
from tidings.web.errors import ApiError, not_found, or_not_found

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


@router.get("", response_model=list[ApiKeyOut])
async def list_keys(key: Admin, tidings: TidingsDep) -> list[ApiKeyOut]:
    """This tenant's keys, revoked ones too, oldest first: never a key or its hash."""
    return [ApiKeyOut.of(info) for info in await tidings.store.keys.list_api_keys(key.tenant_id)]


@router.post("", status_code=201, response_model=CreatedApiKey)
async def create_key(request: CreateApiKey, key: Admin, tidings: TidingsDep) -> CreatedApiKey:
    """A new key for this tenant; the key itself is in ``key``, shown only here."""
    created, plaintext = await tidings.create_tenant_key(key.tenant_id, sorted(set(request.scopes)))
    info = await tidings.store.keys.get_api_key(key.tenant_id, created.id)
    assert info is not None  # keys are revoked, never deleted
    return CreatedApiKey(**ApiKeyOut.of(info).model_dump(), key=plaintext)


@router.get("/{key_id}", response_model=ApiKeyOut)
async def get_key(key_id: str, key: Admin, tidings: TidingsDep) -> ApiKeyOut:
    info = await tidings.store.keys.get_api_key(key.tenant_id, key_id)
    return ApiKeyOut.of(or_not_found(info, "key"))


@router.delete("/{key_id}", status_code=204)
async def revoke_key(key_id: str, key: Admin, tidings: TidingsDep) -> Response:
    """Revoke a key (the caller's own too) and end the portal sessions opened with it. It
    stops working at once on this server and within 5 s on others (their key cache).
    Revoking a revoked key changes nothing. The tenant's last admin key is a 409: create
    another admin key first."""
    revoked = await tidings.revoke_api_key(key_id, key.tenant_id)
    if revoked.outcome is Revocation.NOT_FOUND:
        raise not_found("key")
    if revoked.outcome is Revocation.LAST_ADMIN:
        raise ApiError(
            409, "last_admin_key", "this is the tenant's last admin key; create another first"
        )
    return Response(status_code=204)
