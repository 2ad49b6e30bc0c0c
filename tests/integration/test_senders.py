"""Every sender keeps the same delivery rules, tested against a real receiver on 127.0.0.1:
the body and headers as given, no redirects, a total timeout, a capped read, Retry-After,
connection failures as results (never exceptions), and the SSRF guard on every address."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from tests.support.dns import ScriptedResolver, factory
from tests.support.receiver import Receiver
from tidings.dispatcher.curl_sender import CurlSender
from tidings.dispatcher.guard import GuardedResolver
from tidings.dispatcher.sender import (
    USER_AGENT,
    AiohttpSender,
    Sender,
    SenderFactory,
    SenderOptions,
)
from tidings.domain.addresses import AddressPolicy
from tidings.domain.deliveries import Failure

pytestmark = pytest.mark.asyncio

SENDERS: dict[str, SenderFactory] = {"aiohttp": AiohttpSender, "curl": CurlSender}


@pytest.fixture(params=sorted(SENDERS))
def make_sender(request: pytest.FixtureRequest) -> SenderFactory:
    return SENDERS[request.param]


@pytest.fixture
async def sender(make_sender: SenderFactory) -> AsyncIterator[Sender]:
    made = make_sender(SenderOptions(1.0, 50, GuardedResolver(AddressPolicy(development=True))))
    yield made
    await made.close()


async def test_posts_the_body_and_headers_as_given(sender: Sender, receiver: Receiver) -> None:
    result = await sender.post(receiver.url("/in"), b'{"a":1}', {"Webhook-Id": "msg_1"})
    assert (result.status_code, result.error, result.response_body) == (200, None, "ok")
    got = receiver.at("/in")[0]
    assert got.body == b'{"a":1}'
    assert got.headers["Webhook-Id"] == "msg_1"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"] == USER_AGENT
    assert "Expect" not in got.headers


async def test_redirects_are_reported_not_followed(sender: Sender, receiver: Receiver) -> None:
    receiver.on("/moved", lambda _: web.Response(status=302, headers={"Location": "/in"}))
    result = await sender.post(receiver.url("/moved"), b"{}", {})
    assert (result.status_code, result.error) == (302, "redirect (302) not followed")
    assert receiver.at("/in") == []


async def test_errors_keep_their_body_and_retry_after(sender: Sender, receiver: Receiver) -> None:
    receiver.on(
        "/busy", lambda _: web.Response(status=429, text="slow down", headers={"Retry-After": "7"})
    )
    result = await sender.post(receiver.url("/busy"), b"{}", {})
    assert (result.status_code, result.error, result.response_body) == (
        429,
        "HTTP 429",
        "slow down",
    )
    assert result.retry_after == 7.0


@pytest.mark.parametrize("length_known", [True, False], ids=["content-length", "chunked"])
async def test_a_huge_response_is_read_only_up_to_the_cap(
    sender: Sender, receiver: Receiver, length_known: bool
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if length_known:
            response.content_length = 10_000 * 8192
        await response.prepare(request)
        for _ in range(10_000):  # 80 MB if anyone read it all
            try:
                await response.write(b"x" * 8192)
            except (ConnectionError, RuntimeError):
                break
        return response

    receiver.streaming["/huge"] = endless
    async with asyncio.timeout(5):
        result = await sender.post(receiver.url("/huge"), b"{}", {})
    assert (result.status_code, result.error) == (200, None)
    assert result.response_body == "x" * 4000  # what the log keeps of the capped read


async def test_a_hanging_receiver_times_out(sender: Sender, receiver: Receiver) -> None:
    release = asyncio.Event()

    async def late(_: int) -> web.Response:
        await release.wait()
        return web.Response()

    receiver.on("/hang", late)
    result = await sender.post(receiver.url("/hang"), b"{}", {})
    release.set()
    assert (result.status_code, result.failure) == (None, Failure.TIMEOUT)
    assert result.error == "timeout after 1s" and 900 <= result.elapsed_ms < 5000


async def test_a_refused_connection_is_a_result(sender: Sender, receiver: Receiver) -> None:
    port = receiver.port
    await receiver.stop()
    result = await sender.post(f"http://127.0.0.1:{port}/gone", b"{}", {})
    assert (result.status_code, result.failure) == (None, Failure.CONNECTION)
    assert result.error


async def test_many_in_flight_at_once(make_sender: SenderFactory, receiver: Receiver) -> None:
    """200 at once all arrive. The timeout is generous: on a busy 2-core machine the
    receiver (in this process) can take over a second to answer the last of them."""
    sender = make_sender(SenderOptions(30.0, 50, GuardedResolver(AddressPolicy(development=True))))
    try:
        results = await asyncio.gather(
            *(sender.post(receiver.url(f"/n{i}"), b"{}", {}) for i in range(200))
        )
    finally:
        await sender.close()
    assert [r.status_code for r in results] == [200] * 200
    assert len(receiver.requests) == 200


@pytest.mark.parametrize(
    ("development", "url_of", "delivered"),
    [
        (True, lambda rx: "http://169.254.169.254/latest/meta-data", False),
        (True, lambda rx: "http://[::ffff:169.254.169.254]/", False),
        (False, lambda rx: rx.url("/hook"), False),
        (True, lambda rx: rx.url("/hook"), True),
    ],
)
async def test_ip_literals_pass_the_guard(
    make_sender: SenderFactory,
    receiver: Receiver,
    development: bool,
    url_of: Callable[[Receiver], str],
    delivered: bool,
) -> None:
    sender = make_sender(
        SenderOptions(1.0, 10, GuardedResolver(AddressPolicy(development=development)))
    )
    try:
        result = await sender.post(url_of(receiver), b"{}", {})
    finally:
        await sender.close()
    assert (result.status_code == 200) is delivered, result
    if not delivered:
        assert result.failure is Failure.BLOCKED and "blocked" in (result.error or "")
        assert receiver.requests == []


async def test_names_connect_only_to_the_checked_address(
    make_sender: SenderFactory, receiver: Receiver
) -> None:
    """A name is resolved once, checked, and that address is the one connected to: a
    second answer (DNS rebinding) is never asked for while the first is cached, and a name
    that resolves to a refused address is blocked without connecting."""
    dns = ScriptedResolver({"hook.example": [["127.0.0.1"]], "meta.example": [["169.254.169.254"]]})
    guard = GuardedResolver(AddressPolicy(development=True), factory(dns))
    sender = make_sender(SenderOptions(1.0, 10, guard))
    try:
        good: Any = await sender.post(f"http://hook.example:{receiver.port}/named", b"{}", {})
        bad: Any = await sender.post("http://meta.example/latest", b"{}", {})
    finally:
        await sender.close()
    assert good.status_code == 200, good
    assert receiver.at("/named")[0].headers["Host"] == f"hook.example:{receiver.port}"
    assert (bad.status_code, bad.failure) == (None, Failure.BLOCKED)


STOPPED = (Failure.CONNECTION, "curl error 42: sender stopped")
"""What a POST that a dying or closing curl engine leaves unfinished answers."""


@contextlib.asynccontextmanager
async def idle_curl_sender(receiver: Receiver) -> AsyncIterator[CurlSender]:
    """A curl sender whose engine has sent one POST and waits for work: a method patched
    now runs at its next wake, not in a call already under way."""
    sender = CurlSender(SenderOptions(10.0, 10))
    try:
        warm = await sender.post(receiver.url("/warm"), b"{}", {})
        assert warm.status_code == 200
        yield sender
    finally:
        await sender.close()


async def test_a_crashed_curl_engine_fails_its_transfers_and_starts_again(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that kills libcurl's thread must not leave deliveries waiting forever: what
    it held fails (and is retried as usual), and the next POST starts a new thread."""
    from tidings.dispatcher import curl_sender

    release = asyncio.Event()

    async def held(_: int) -> web.Response:
        await release.wait()
        return web.Response()

    receiver.on("/held", held)
    sender = CurlSender(SenderOptions(10.0, 10))
    try:
        pending = asyncio.create_task(sender.post(receiver.url("/held"), b"{}", {}))
        await receiver.wait_count("/held", 1)

        def crash(_: Any) -> None:
            raise RuntimeError("a bug")

        working = curl_sender._Engine._step
        monkeypatch.setattr(curl_sender._Engine, "_step", crash)
        sender._wake()
        async with asyncio.timeout(5):
            failed = await pending
        assert (failed.failure, failed.error) == STOPPED
        monkeypatch.setattr(curl_sender._Engine, "_step", working)
        again = await sender.post(receiver.url("/after"), b"{}", {})
        assert again.status_code == 200
    finally:
        release.set()
        await sender.close()


async def test_a_post_queued_as_the_curl_engine_dies_is_sent_by_the_next_one(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine dies between a POST being queued and taken: no later POST is needed for
    a new engine to take it."""
    from tidings.dispatcher import curl_sender

    taking = curl_sender._Engine._take_jobs
    crashes: list[Any] = []

    def crash_once(engine: Any) -> None:
        if not crashes:
            crashes.append(engine)
            raise RuntimeError("a bug")
        taking(engine)

    async with idle_curl_sender(receiver) as sender:
        monkeypatch.setattr(curl_sender._Engine, "_take_jobs", crash_once)
        async with asyncio.timeout(5):
            result = await sender.post(receiver.url("/queued"), b"{}", {})
        assert result.status_code == 200, result.error
        assert len(crashes) == 1


async def test_an_engine_that_dies_at_once_fails_the_post_and_is_not_restarted_in_a_loop(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidings.dispatcher import curl_sender

    taking = curl_sender._Engine._take_jobs
    engines: list[Any] = []

    def crash(engine: Any) -> None:
        engines.append(engine)
        raise RuntimeError("a bug")

    async with idle_curl_sender(receiver) as sender:
        monkeypatch.setattr(curl_sender._Engine, "_take_jobs", crash)
        async with asyncio.timeout(5):
            failed = await sender.post(receiver.url("/doomed"), b"{}", {})
        assert (failed.failure, failed.error) == STOPPED
        await asyncio.sleep(0.2)  # a restart loop would go on starting engines meanwhile
        assert len(engines) == 2  # the first engine, and one replacement
        monkeypatch.setattr(curl_sender._Engine, "_take_jobs", taking)
        again = await sender.post(receiver.url("/after"), b"{}", {})
        assert again.status_code == 200


async def test_curl_remembers_short_urls_only(receiver: Receiver) -> None:
    """Converted URLs are cached per sender; a long one (a transformation may set a new one
    on every event) is converted each time, so the cache stays small."""
    sender = CurlSender(SenderOptions(10.0, 10))
    try:
        long_path = "/" + "é" * 300
        for path in ("/short", "/short", long_path):
            assert (await sender.post(receiver.url(path), b"{}", {})).status_code == 200
        assert [url for url, _ in sender._targets.items()] == [receiver.url("/short")]
        assert [r.path for r in receiver.requests][-1] == long_path
    finally:
        await sender.close()


async def test_a_url_with_non_ascii_characters_is_sent_encoded(
    sender: Sender, receiver: Receiver
) -> None:
    result = await sender.post(receiver.url("/café/hook"), b"{}", {})
    assert result.status_code == 200, result
    assert [r.path for r in receiver.requests] == ["/café/hook"]


async def test_an_answer_that_stalls_mid_body_counts_as_answered(
    sender: Sender, receiver: Receiver
) -> None:
    """200 and the first bytes, then nothing: the receiver answered; retrying would
    deliver the event twice."""
    release = asyncio.Event()

    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b"accepted")
        await release.wait()
        return response

    receiver.streaming["/stall"] = stalls
    result = await sender.post(receiver.url("/stall"), b"{}", {})
    release.set()
    assert (result.status_code, result.error, result.response_body) == (200, None, "accepted")


async def test_a_garbled_retry_after_is_ignored(sender: Sender, receiver: Receiver) -> None:
    busy = web.Response(status=503, headers={"Retry-After": "²"})
    receiver.on("/garbled", lambda _: busy)
    result = await sender.post(receiver.url("/garbled"), b"{}", {})
    assert (result.status_code, result.retry_after) == (503, None)


async def test_closing_twice_is_harmless(make_sender: SenderFactory) -> None:
    sender = make_sender(SenderOptions(1.0, 10))
    await sender.close()
    await sender.close()
