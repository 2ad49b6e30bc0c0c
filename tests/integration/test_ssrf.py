"""Production mode refuses forbidden destinations at save time and again at connect time."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.dns import ScriptedResolver, factory
from tests.support.receiver import Receiver

pytestmark = pytest.mark.asyncio

PUBLIC = "93.184.215.14"
NUMERIC_SPELLINGS = [
    "https://127.0.0.1/hook",
    "https://2130706433/hook",  # decimal
    "https://0x7f.0.0.1/hook",  # hex
    "https://017700000001/hook",  # octal
    "https://127.1/hook",  # short form
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::1]/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[fd00:ec2::254]/",
    "https://localhost/hook",
    "https://10.0.0.1/hook",
    "https://100.64.1.1/hook",
]


async def create(api: Any, url: str) -> Any:
    return await api.client.post(
        "/api/v1/webhooks/subscriptions",
        json={"url": url, "eventTypes": ["client.created"]},
        headers=await api.key(),
    )


@pytest.mark.parametrize("url", NUMERIC_SPELLINGS)
async def test_forbidden_addresses_are_422(start_api: Any, url: str) -> None:
    async with start_api(env="production", dispatcher=False) as api:
        response = await create(api, url)
        assert response.status_code == 422, response.text
        assert "not allowed" in response.json()["error"]["message"]


async def test_names_resolving_to_private_addresses_are_422(start_api: Any) -> None:
    dns = ScriptedResolver(
        {
            "internal.example": [["10.0.0.5"]],
            "mixed.example": [[PUBLIC, "127.0.0.1"]],
            "good.example": [[PUBLIC]],
        }
    )
    async with start_api(env="production", dispatcher=False, resolver_factory=factory(dns)) as api:
        assert (await create(api, "https://internal.example/h")).status_code == 422
        assert (await create(api, "https://mixed.example/h")).status_code == 422
        assert (await create(api, "https://good.example/h")).status_code == 201
        assert (await create(api, "http://good.example/h")).status_code == 422  # https only


async def test_operator_allowlist(start_api: Any) -> None:
    async with start_api(env="production", dispatcher=False, allow_cidrs="10.9.0.0/16") as api:
        assert (await create(api, "https://10.9.1.1/h")).status_code == 201
        assert (await create(api, "https://10.8.1.1/h")).status_code == 422


async def test_dns_rebinding_is_refused_at_connect_time(start_api: Any, receiver: Receiver) -> None:
    """Public when saved, loopback when sent: the send never connects."""
    dns = ScriptedResolver({"rebind.example": [[PUBLIC], ["127.0.0.1"]]})
    async with start_api(env="production", dispatcher=False, resolver_factory=factory(dns)) as api:
        headers = await api.key()
        url = f"https://rebind.example:{receiver.port}/hook"
        created = await api.client.post(
            "/api/v1/webhooks/subscriptions",
            json={"url": url, "eventTypes": ["client.created"]},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        sent = await api.client.post(
            f"/api/v1/webhooks/subscriptions/{created.json()['id']}/test",
            json={"eventType": "client.created"},
            headers=headers,
        )
        result = sent.json()
        assert result["success"] is False and result["statusCode"] is None
        assert "loopback" in result["error"]
        assert dns.lookups == ["rebind.example", "rebind.example"]
        assert receiver.requests == []
