"""``TIDINGS_EGRESS_PROXY``: deliveries go out through a real HTTP CONNECT proxy
(tinyproxy on 127.0.0.2), tunnelled to the address the SSRF guard checked, for http and
https receivers; the proxy never resolves a receiver's name."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import proxy
from tests.support.dns import ScriptedResolver, factory
from tests.support.receiver import Receiver
from tests.support.stores import service_for, settings_for
from tidings.dispatcher.curl_sender import CurlSender
from tidings.dispatcher.guard import GuardedResolver
from tidings.dispatcher.sender import SenderOptions
from tidings.domain.addresses import AddressPolicy
from tidings.domain.catalog import SUBSCRIPTION_DISABLED
from tidings.domain.deliveries import Failure

pytestmark = pytest.mark.asyncio

NAME = "hooks.tidings.test"


@pytest.fixture
def tinyproxy_installed() -> None:
    if not proxy.available():
        if os.environ.get("CI"):
            pytest.fail("tinyproxy is required in CI (apt-get install tinyproxy)")
        pytest.skip("tinyproxy is not installed")


@pytest.fixture
def through(tinyproxy_installed: None, receiver: Receiver) -> Iterator[proxy.Proxy]:
    with proxy.tinyproxy([receiver.port]) as running:
        yield running


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[tuple[Receiver, proxy.LocalCA]]:
    ca = proxy.local_ca(tmp_path, NAME)
    rx = Receiver()
    rx.tls = ca.server
    async with rx:
        yield rx, ca


def guard(development: bool = True) -> GuardedResolver:
    """``NAME`` resolves to 127.0.0.1 (loopback: allowed in development only)."""
    names = ScriptedResolver({NAME: [["127.0.0.1"]]})
    return GuardedResolver(AddressPolicy(development=development), factory(names))


async def post(
    url: str, via: str, *, ca_bundle: Path | None = None, development: bool = True
) -> tuple[int | None, Failure | None]:
    bundle = str(ca_bundle) if ca_bundle else None
    sender = CurlSender(SenderOptions(5.0, 10, guard(development), proxy=via, ca_bundle=bundle))
    try:
        result = await sender.post(url, b'{"a":1}', {"Webhook-Id": "msg_1"})
    finally:
        await sender.close()
    return result.status_code, result.failure


async def test_an_http_delivery_is_tunnelled_to_the_checked_address(
    through: proxy.Proxy, receiver: Receiver
) -> None:
    assert await post(receiver.url("/in", host=NAME), through.url) == (200, None)
    got = receiver.at("/in")[0]
    assert got.peer == proxy.PROXY_ADDRESS, "the connection came from the proxy"
    assert got.headers["Host"] == f"{NAME}:{receiver.port}"
    assert got.body == b'{"a":1}'
    assert through.tunnels() == [f"127.0.0.1:{receiver.port}"], "CONNECT names the address"


async def test_an_https_delivery_keeps_the_name_for_tls_and_trusts_the_extra_ca(
    tinyproxy_installed: None, tls_receiver: tuple[Receiver, proxy.LocalCA]
) -> None:
    rx, ca = tls_receiver
    url = rx.url("/in", host=NAME)
    with proxy.tinyproxy([rx.port]) as through:
        assert await post(url, through.url, ca_bundle=ca.ca_file) == (200, None)
        assert rx.at("/in")[0].peer == proxy.PROXY_ADDRESS
        status, failure = await post(url, through.url)  # the test CA is not trusted then
        assert (status, failure) == (None, Failure.CONNECTION)
        assert through.tunnels() == [f"127.0.0.1:{rx.port}"] * 2
    assert len(rx.at("/in")) == 1


async def test_a_name_resolving_to_a_private_address_is_refused_before_the_proxy(
    through: proxy.Proxy, receiver: Receiver
) -> None:
    status, failure = await post(receiver.url("/in", host=NAME), through.url, development=False)
    assert (status, failure) == (None, Failure.BLOCKED)
    assert through.tunnels() == []
    assert receiver.at("/in") == []


async def test_test_sends_go_through_the_proxy(
    through: proxy.Proxy, receiver: Receiver, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings = settings_for("memory", request, tmp_path).model_copy(
        update={"egress_proxy": through.url}
    )
    async with service_for(settings) as tidings:
        tenant = await tidings.store.keys.ensure_tenant("acme")
        sub, _ = await tidings.create_subscription(tenant.id, receiver.url("/t"), ["*"])
        report = await tidings.test_delivery(sub, SUBSCRIPTION_DISABLED.name, use_sample=True)
    assert report.status_code == 200
    assert receiver.at("/t")[0].peer == proxy.PROXY_ADDRESS
