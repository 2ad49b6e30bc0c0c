"""The emit fast path answers exactly as the FastAPI route does, and takes the common case.

Two apps share one service: one with the fast path, one without. Every request goes to
both; their answers must be the same but for the new event's id and time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Api
from tests.integration.test_hostile_input import FUZZ
from tests.unit.test_strict_input import json_values
from tidings.api.fast_emit import FastEmit
from tidings.app import create_app
from tidings.storage.errors import StorageUnavailable

pytestmark = pytest.mark.asyncio

VALID = {"type": "client.created", "payload": {"n": 1}}
DEEP: dict[str, Any] = {"a": 1}
for _ in range(40):
    DEEP = {"a": DEEP}
DEEPER: dict[str, Any] = DEEP
for _ in range(400):  # past Python's recursion limit for a recursive depth check
    DEEPER = {"a": DEEPER}


@dataclass
class Pair:
    fast: httpx.AsyncClient
    route: httpx.AsyncClient
    middleware: FastEmit
    keys: dict[str, str]

    async def both(
        self, body: Any, headers: dict[str, str], query: str = ""
    ) -> tuple[httpx.Response, httpx.Response]:
        sent = [("content-type", "application/json"), *headers.items()]
        return await self.raw(json.dumps(body).encode(), sent, query)

    async def raw(
        self, content: bytes, headers: list[tuple[str, str]], query: str = ""
    ) -> tuple[httpx.Response, httpx.Response]:
        """Exactly these bytes and header lines (repeats kept) to both apps."""
        answers = []
        for client in (self.fast, self.route):
            url = "/api/v1/events" + query
            sent = httpx.Headers([(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers])
            answers.append(await client.post(url, content=content, headers=sent))
        return answers[0], answers[1]


def fast_emit_of(app: Any) -> FastEmit:
    """The FastEmit instance in the app's middleware stack (built on the first request)."""
    layer = app.middleware_stack
    while not isinstance(layer, FastEmit):
        layer = layer.app
    return layer


@pytest.fixture
async def pair(api: Api) -> AsyncIterator[Pair]:
    without = create_app(api.tidings, run_dispatcher=False, fast_emit=False)
    transport = httpx.ASGITransport(app=without)
    async with httpx.AsyncClient(transport=transport, base_url="http://tidings") as route:
        keys = {
            "admin": (await api.key("acme"))["X-Api-Key"],
            "reader": (await api.key("acme", "events:read"))["X-Api-Key"],
            "writer": (await api.key("acme", "events:write"))["X-Api-Key"],
        }
        await api.client.get("/healthz")  # builds the middleware stack
        app = api.client._transport.app  # type: ignore[attr-defined]
        yield Pair(api.client, route, fast_emit_of(app), keys)


def comparable(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    """Status, body and the headers that matter, with a new event's id and time masked."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    headers = {
        name: value
        for name, value in response.headers.items()
        if name in ("content-type", "retry-after", "idempotent-replayed", "allow")
    }
    if response.status_code == 201:
        assert response.headers["location"] == f"/api/v1/events/{body['id']}"
        body = {**body, "id": "…", "createdUtc": "…"}
    return response.status_code, body, headers


async def assert_same(pair: Pair, *args: Any, **kwargs: Any) -> int:
    fast, route = await pair.both(*args, **kwargs)
    assert comparable(fast) == comparable(route)
    return fast.status_code


REQUESTS: list[tuple[str, Any, dict[str, str], str]] = [
    ("valid", VALID, {"X-Api-Key": "admin"}, ""),
    ("writer scope", VALID, {"X-Api-Key": "writer"}, ""),
    (
        "metadata and key",
        {**VALID, "metadata": {"a": 1}, "orderingKey": "k"},
        {"X-Api-Key": "admin"},
        "",
    ),
    ("no key", VALID, {}, ""),
    ("unknown key", VALID, {"X-Api-Key": "tdg_nope"}, ""),
    ("read-only key", VALID, {"X-Api-Key": "reader"}, ""),
    ("missing payload", {"type": "client.created"}, {"X-Api-Key": "admin"}, ""),
    ("bad type pattern", {"type": "no spaces!", "payload": {}}, {"X-Api-Key": "admin"}, ""),
    ("unknown type", {"type": "nobody.knows", "payload": {}}, {"X-Api-Key": "admin"}, ""),
    (
        "payload not an object",
        {"type": "client.created", "payload": [1]},
        {"X-Api-Key": "admin"},
        "",
    ),
    ("body an array", [VALID], {"X-Api-Key": "admin"}, ""),
    ("extra field", {**VALID, "surprise": 1}, {"X-Api-Key": "admin"}, ""),
    ("too deep", {"type": "client.created", "payload": DEEP}, {"X-Api-Key": "admin"}, ""),
    ("far too deep", {"type": "client.created", "payload": DEEPER}, {"X-Api-Key": "admin"}, ""),
    ("unknown query", VALID, {"X-Api-Key": "admin"}, "?dry=1"),
    ("long idempotency key", VALID, {"X-Api-Key": "admin", "Idempotency-Key": "k" * 256}, ""),
    ("empty idempotency key", VALID, {"X-Api-Key": "admin", "Idempotency-Key": ""}, ""),
    ("bad key and bad body", {"type": ""}, {"X-Api-Key": "tdg_nope"}, ""),
]


@pytest.mark.parametrize(
    ("body", "headers", "query"),
    [r[1:] for r in REQUESTS],
    ids=[r[0] for r in REQUESTS],
)
async def test_the_fast_path_answers_as_the_route_does(
    pair: Pair, body: Any, headers: dict[str, str], query: str
) -> None:
    sent = {name: pair.keys.get(value, value) for name, value in headers.items()}
    before = pair.middleware.handled
    status = await assert_same(pair, body, sent, query)
    assert (pair.middleware.handled > before) == (status == 201)


async def test_idempotency_replays_and_conflicts_match(pair: Pair) -> None:
    for client in ("fast", "route"):
        headers = {"X-Api-Key": pair.keys["admin"], "Idempotency-Key": f"order-{client}"}
        target = pair.fast if client == "fast" else pair.route
        first = await target.post("/api/v1/events", json=VALID, headers=headers)
        again = await target.post("/api/v1/events", json=VALID, headers=headers)
        other = await target.post("/api/v1/events", json={**VALID, "payload": {}}, headers=headers)
        assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
        assert other.status_code == 409, other.text
    replays = {"X-Api-Key": pair.keys["admin"], "Idempotency-Key": "order-fast"}
    assert await assert_same(pair, VALID, replays) == 201
    assert await assert_same(pair, {**VALID, "payload": {}}, replays) == 409


async def test_a_database_outage_is_the_same_503(
    pair: Pair, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*_: object, **__: object) -> None:
        raise StorageUnavailable("the database went away")

    monkeypatch.setattr(api.tidings.store.events, "insert_event", down)
    assert await assert_same(pair, VALID, {"X-Api-Key": pair.keys["admin"]}) == 503


async def test_throttled_keys_get_the_routes_429(start_api: Any) -> None:
    async with start_api(api_rate_limit=1) as api:
        headers = await api.key()
        answers = [
            await api.client.post("/api/v1/events", json=VALID, headers=headers) for _ in range(4)
        ]
    statuses = [a.status_code for a in answers]
    assert statuses[:2] == [201, 201] and statuses[-1] == 429, statuses
    assert answers[-1].json()["error"]["code"] == "rate_limited"
    assert int(answers[-1].headers["Retry-After"]) >= 1


bodies = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["client.created", "Client.Created", "", "x" * 129, "a b"])
        | json_values,
        "payload": json_values,
        "metadata": json_values,
        "orderingKey": st.sampled_from(["", "k", "k" * 257]) | json_values,
    },
)


@FUZZ
@given(body=bodies)
async def test_any_body_is_answered_the_same(pair: Pair, body: dict[str, Any]) -> None:
    await assert_same(pair, body, {"X-Api-Key": pair.keys["admin"]})


CONTENT_TYPES = [
    [],
    [("content-type", "text/plain"), ("content-type", "application/json")],
    [("content-type", "application/json"), ("content-type", "text/plain")],
    [("content-type", "application/a/b+json")],
    [("content-type", "application/json; charset=utf-8")],
    [("content-type", "APPLICATION/JSON")],
    [("content-type", "application/vnd.x+json")],
    [("content-type", "application/json\xa0")],
    [("content-type", "application/json, text/plain")],
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES, ids=repr)
async def test_content_types_are_judged_as_fastapi_judges_them(
    pair: Pair, content_type: list[tuple[str, str]]
) -> None:
    headers = [("x-api-key", pair.keys["admin"]), *content_type]
    fast, route = await pair.raw(json.dumps(VALID).encode(), headers)
    assert comparable(fast) == comparable(route)


async def test_a_nul_under_a_second_content_type_is_refused(pair: Pair) -> None:
    """StrictInput and the fast path read the same (first) Content-Type."""
    headers = [
        ("x-api-key", pair.keys["admin"]),
        ("content-type", "text/plain"),
        ("content-type", "application/json"),
    ]
    body = b'{"type":"client.created","payload":{"s":"a\\u0000b"}}'
    fast, route = await pair.raw(body, headers)
    assert fast.status_code == 422 and comparable(fast) == comparable(route)


@pytest.mark.parametrize(
    "body",
    [b"[" * 200_000, b'{"type":"client.created","payload":' + b'{"a":' * 2000 + b"1" + b"}" * 2001],
    ids=["unterminated", "payload 2000 deep"],
)
@pytest.mark.parametrize("with_key", [True, False])
async def test_json_too_deep_to_parse_is_the_routes_answer(
    pair: Pair, body: bytes, with_key: bool
) -> None:
    headers = [("content-type", "application/json")]
    if with_key:
        headers.append(("x-api-key", pair.keys["admin"]))
    fast, route = await pair.raw(body, headers)
    assert fast.status_code == 400 and comparable(fast) == comparable(route)


async def test_an_outage_while_looking_up_the_key_is_the_same_503(
    pair: Pair, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*_: object, **__: object) -> None:
        raise StorageUnavailable("the database went away")

    uncached = (await api.key())["X-Api-Key"]
    monkeypatch.setattr(api.tidings.store.keys, "find_api_key", down)
    headers = [("x-api-key", uncached), ("content-type", "application/json")]
    fast, route = await pair.raw(json.dumps(VALID).encode(), headers)
    assert fast.status_code == 503 and comparable(fast) == comparable(route)


async def test_an_unknown_key_is_looked_up_once(
    pair: Pair, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    find = api.tidings.store.keys.find_api_key

    async def counted(key_hash: str) -> Any:
        lookups.append(key_hash)
        return await find(key_hash)

    monkeypatch.setattr(api.tidings.store.keys, "find_api_key", counted)
    headers = {"X-Api-Key": "tdg_nope"}
    answer = await api.client.post("/api/v1/events", json=VALID, headers=headers)
    assert answer.status_code == 401 and len(lookups) == 1
