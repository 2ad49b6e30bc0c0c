"""The portal as a browser sees it: cookies kept, CSRF tokens filled in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.conftest import Api
from tidings.domain.subscriptions import Subscription

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


class Browser:
    """A cookie-keeping client that fills in the page's CSRF token like a browser would."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf = ""

    async def get(self, path: str, **params: Any) -> httpx.Response:
        response = await self.client.get(path, params=params or None)
        found = CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def post(
        self, path: str, form: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        if not self.csrf:
            await self.get("/portal/")
        return await self.client.post(path, data={"csrf": self.csrf, **(form or {})}, **kw)


@asynccontextmanager
async def signed_in(api: Api, plaintext: str) -> AsyncIterator[Browser]:
    """A browser of its own, signed in to the portal with this API key."""
    async with api.new_client() as client:
        response = await client.post("/portal/login", data={"api_key": plaintext})
        assert response.status_code == 303, response.text
        yield Browser(client)


async def acme_tenant_id(api: Api) -> str:
    """The id of the tenant ``acme`` (the portal tests' own), which must exist."""
    tenant = await api.tidings.store.keys.find_tenant("acme")
    assert tenant is not None
    return tenant.id


async def acme_subscriptions(api: Api) -> list[Subscription]:
    """The first page (10) of ``acme``'s stored subscriptions."""
    tenant_id = await acme_tenant_id(api)
    return list((await api.tidings.store.subscriptions.page(tenant_id, None, 10)).items)
