"""``X-Api-Key`` authentication and scope checks."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from tidings.service import Tidings
from tidings.storage import ApiKey
from tidings.web.errors import ApiError

api_key_header = APIKeyHeader(name="X-Api-Key", auto_error=False)


async def get_tidings(request: Request) -> Tidings:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in a thread pool."""
    tidings: Tidings = request.app.state.tidings
    return tidings


async def authorize(tidings: Tidings, plaintext: str | None, scope: str) -> ApiKey:
    """The key ``plaintext`` names if it is valid and holds ``scope`` (or ``admin``);
    else the 401 or 403. Reads no more than a cached lookup: nothing is spent."""
    if not plaintext:
        raise ApiError(401, "unauthorized", "missing X-Api-Key header")
    key = await tidings.authenticate(plaintext)
    if key is None:
        raise ApiError(401, "unauthorized", "invalid API key")
    if scope not in key.scopes and "admin" not in key.scopes:
        raise ApiError(403, "forbidden", f"this API key lacks the {scope!r} scope")
    return key


def require(scope: str) -> Callable[..., Awaitable[ApiKey]]:
    """A dependency that yields the caller's key if it holds ``scope`` (or ``admin``)."""

    async def dependency(
        plaintext: str | None = Depends(api_key_header),
        tidings: Tidings = Depends(get_tidings),
    ) -> ApiKey:
        key = await authorize(tidings, plaintext, scope)
        wait = tidings.throttle(key)
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait)))
            raise ApiError(
                429,
                "rate_limited",
                "too many requests for this API key",
                {"retryAfterSeconds": retry_after},
                headers={"Retry-After": retry_after},
            )
        return key

    return dependency


# Route parameters: the running service, and the caller's key checked for one scope.
TidingsDep = Annotated[Tidings, Depends(get_tidings)]
EventsReader = Annotated[ApiKey, Depends(require("events:read"))]
EventsWriter = Annotated[ApiKey, Depends(require("events:write"))]
WebhooksReader = Annotated[ApiKey, Depends(require("webhooks:read"))]
WebhooksWriter = Annotated[ApiKey, Depends(require("webhooks:write"))]
Admin = Annotated[ApiKey, Depends(require("admin"))]
