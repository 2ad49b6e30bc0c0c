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


async def refused_test_send(api: Any, headers: dict[str, str], subscription_id: str) -> Any:
    """Send the subscription a test event; it must fail before any answer."""
    sent = await api.client.post(
        f"/api/v1/webhooks/subscriptions/{subscription_id}/test",
        json={"eventType": "client.created"},
        headers=headers,
    )
    result = sent.json()
    assert result["success"] is False and result["statusCode"] is None
    return result


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
        result = await refused_test_send(api, headers, created.json()["id"])
        assert "loopback" in result["error"]
        assert dns.lookups == ["rebind.example", "rebind.example"]
        assert receiver.requests == []


# --- cloud metadata: refused in every mode -------------------------------------------------

METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data",
    "http://2852039166/latest/meta-data",  # 169.254.169.254 in decimal
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/latest/meta-data",
    "http://100.100.100.200/latest/meta-data",
]
DEVELOPMENT_REFUSED = [
    *METADATA_URLS,
    "http://169.254.1.1/",
    "http://100.64.1.1/",
    "http://0.0.0.0/",
]
DEVELOPMENT_ALLOWED = [
    "http://127.0.0.1:9/h",
    "http://[::1]:9/h",
    "http://10.1.2.3/h",
    "http://172.16.0.1/h",
    "http://192.168.1.1/h",
    "http://[fd12::1]/h",
    "http://localhost:9/h",
    "http://unresolvable.example/h",  # development resolves no name when saving
]
METADATA_ALLOWLIST = "169.254.0.0/16,100.64.0.0/10,fd00::/8,::ffff:0:0/96"


async def subscriptions(api: Any, headers: dict[str, str]) -> list[Any]:
    response = await api.client.get("/api/v1/webhooks/subscriptions", headers=headers)
    return response.json()  # type: ignore[no-any-return]


async def test_development_refuses_metadata_link_local_and_cgnat(start_api: Any) -> None:
    async with start_api(env="development", dispatcher=False) as api:
        headers = await api.key()
        for url in DEVELOPMENT_REFUSED:
            response = await create(api, url)
            assert response.status_code == 422, (url, response.text)
            error = response.json()["error"]
            assert "not allowed" in error["message"]
            hooked = await api.client.post(
                "/api/v1/hooks", json={"hookUrl": url, "event": "client.created"}, headers=headers
            )
            assert hooked.status_code == 422, (url, hooked.text)
        assert await subscriptions(api, headers) == []
        assert "metadata" in (await create(api, METADATA_URLS[0])).json()["error"]["message"]


async def test_development_allows_loopback_and_private_ranges(start_api: Any) -> None:
    async with start_api(env="development", dispatcher=False) as api:
        for url in DEVELOPMENT_ALLOWED:
            response = await create(api, url)
            assert response.status_code == 201, (url, response.text)


@pytest.mark.parametrize("env", ["development", "production"])
async def test_metadata_is_refused_even_when_allowlisted(start_api: Any, env: str) -> None:
    async with start_api(env=env, dispatcher=False, allow_cidrs=METADATA_ALLOWLIST) as api:
        headers = await api.key()
        scheme = "http" if env == "development" else "https"
        for url in METADATA_URLS:
            response = await create(api, url.replace("http:", f"{scheme}:"))
            assert response.status_code == 422, (url, response.text)
            assert "metadata" in response.json()["error"]["message"]
        assert await subscriptions(api, headers) == []
        neighbour = await create(api, f"{scheme}://169.254.169.253/h")
        assert neighbour.status_code == 201, "the allowlist still works beside metadata"


@pytest.mark.parametrize("env", ["development", "production"])
async def test_patching_the_url_to_metadata_is_422(start_api: Any, env: str) -> None:
    async with start_api(env=env, dispatcher=False, allow_cidrs="10.9.0.0/16") as api:
        headers = await api.key()
        scheme = "http" if env == "development" else "https"
        created = await create(api, f"{scheme}://10.9.1.1/h")
        assert created.status_code == 201, created.text
        path = f"/api/v1/webhooks/subscriptions/{created.json()['id']}"
        for url in METADATA_URLS:
            patched = await api.client.patch(
                path, json={"url": url.replace("http:", f"{scheme}:")}, headers=headers
            )
            assert patched.status_code == 422, (url, patched.text)
        assert (await api.client.get(path, headers=headers)).json()[
            "url"
        ] == f"{scheme}://10.9.1.1/h"


@pytest.mark.parametrize("env", ["development", "production"])
async def test_names_resolving_to_metadata_are_refused_at_send_time(
    start_api: Any, env: str
) -> None:
    """Development saves a name without resolving it, production while it still resolves
    to a public address; either way the send-time guard refuses it."""
    scheme = "http" if env == "development" else "https"
    answers = [["169.254.169.254"]] if env == "development" else [[PUBLIC], ["169.254.169.254"]]
    dns = ScriptedResolver({"metadata.example": answers})
    async with start_api(
        env=env, dispatcher=False, resolver_factory=factory(dns), allow_cidrs=METADATA_ALLOWLIST
    ) as api:
        headers = await api.key()
        created = await create(api, f"{scheme}://metadata.example/latest/meta-data")
        assert created.status_code == 201, created.text
        result = await refused_test_send(api, headers, created.json()["id"])
        assert "metadata" in result["error"] and "blocked" in result["error"]
        assert dns.lookups == ["metadata.example"] * (1 if env == "development" else 2)


@pytest.mark.parametrize("host", ["a..example.com", "x" * 64 + ".example.com"])
async def test_host_names_idna_refuses_are_422_not_500(start_api: Any, host: str) -> None:
    async with start_api(env="production", dispatcher=False) as api:
        response = await create(api, f"https://{host}/hook")
        assert response.status_code == 422, response.text
        hook = await api.client.post(
            "/api/v1/hooks",
            json={"hookUrl": f"https://{host}/hook", "event": "client.created"},
            headers=await api.key(),
        )
        assert hook.status_code == 422, hook.text
