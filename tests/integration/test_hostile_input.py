"""Hostile input through the API, on both databases: what Python's json accepts but JSON,
UTF-8 or PostgreSQL do not is a 400 on every route and stores nothing; a NUL or stray
bytes in the URL or a header are never a 500; a chunked body past the limit is a 413."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api
from tests.integration.test_api_errors import assert_error
from tests.integration.test_crm import running_crm
from tests.unit.test_strict_input import _insert, json_values
from tidings.config import Settings

pytestmark = pytest.mark.asyncio

FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
async def crm(make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    """The API with the reference CRM mounted, as ``tidings serve`` runs it."""
    async with running_crm(make_settings(max_request_bytes=4096)) as running:
        yield running


async def events(api: Api, headers: dict[str, str]) -> list[Any]:
    response = await api.client.get("/api/v1/events", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def subscriptions(api: Api, headers: dict[str, str]) -> list[Any]:
    response = await api.client.get("/api/v1/webhooks/subscriptions", headers=headers)
    return response.json()  # type: ignore[no-any-return]


async def clients(api: Api, headers: dict[str, str]) -> list[Any]:
    response = await api.client.get("/api/v1/clients/search?name=a", headers=headers)
    return response.json()  # type: ignore[no-any-return]


def emit_body(payload: str, metadata: str = "{}", type_: str = '"client.created"') -> bytes:
    return f'{{"type": {type_}, "payload": {payload}, "metadata": {metadata}}}'.encode()


REFUSED_EMITS = {
    "NaN": emit_body('{"x": NaN}'),
    "Infinity": emit_body('{"x": [1, Infinity]}'),
    "-Infinity": emit_body('{"x": {"y": -Infinity}}'),
    "overflow": emit_body('{"x": 1e400}'),
    "NaN in metadata": emit_body("{}", '{"m": NaN}'),
    "lone high surrogate": emit_body('{"x": "\\ud800"}'),
    "lone low surrogate": emit_body('{"x": "a\\udc00b"}'),
    "lone surrogate in a key": emit_body('{"\\ud83d": 1}'),
    "lone surrogate in metadata key": emit_body("{}", '{"\\udfff": "v"}'),
    "lone surrogate in the type": emit_body("{}", type_='"client.\\ud800"'),
    "surrogate encoded as UTF-8": emit_body('{"x": "@"}').replace(b"@", b"\xed\xa0\x80"),
    "NUL": emit_body('{"x": "a\\u0000b"}'),
    "UTF-16 with NaN": emit_body('{"x": NaN}').decode().encode("utf-16"),
}


@pytest.mark.parametrize("body", REFUSED_EMITS.values(), ids=REFUSED_EMITS.keys())
async def test_emits_json_cannot_carry_are_400_and_store_nothing(api: Api, body: bytes) -> None:
    headers = await api.key()
    response = await api.client.post(
        "/api/v1/events", content=body, headers={**headers, **JSON_HEADERS}
    )
    error = assert_error(response, 400, "invalid_json")
    assert error["details"][0]["field"].startswith("body")  # type: ignore[index]
    assert await events(api, headers) == []


async def test_surrogate_pairs_and_look_alikes_are_accepted(api: Api) -> None:
    headers = await api.key()
    payload = (
        '{"escaped": "\\ud83d\\ude00", "\\uD83D\\uDE00": "key", "raw": "\U0001f600",'
        ' "words": "NaN Infinity e400", "hangul": "\ud55c", "big": 1e308}'
    )
    response = await api.client.post(
        "/api/v1/events", content=emit_body(payload).decode(), headers={**headers, **JSON_HEADERS}
    )
    assert response.status_code == 201, response.text
    [stored] = await events(api, headers)
    assert stored["payload"] == {
        "escaped": "\U0001f600",
        "\U0001f600": "key",
        "raw": "\U0001f600",
        "words": "NaN Infinity e400",
        "hangul": "\ud55c",
        "big": 1e308,
    }


async def body_operations(api: Api) -> list[tuple[str, str]]:
    """Every POST, PATCH and PUT in the OpenAPI document, path parameters filled in."""
    spec = (await api.client.get("/openapi.json")).json()
    return [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, operations in spec["paths"].items()
        for method in operations
        if method in ("post", "patch", "put")
    ]


@pytest.mark.parametrize(
    "body", [b'{"x": NaN}', b'{"x": "\\ud800"}', b'{"\\udc00": 1}', b"[Infinity]"]
)
async def test_every_route_that_takes_json_refuses_it_first(crm: Api, body: bytes) -> None:
    """Every POST/PATCH/PUT under /api, the CRM's included, before auth, validation or
    lookups: new routes are covered without anyone remembering to."""
    headers = {**await crm.key(), **JSON_HEADERS}
    routes = await body_operations(crm)
    assert ("POST", "/api/v1/clients") in routes and ("POST", "/api/v1/events") in routes
    assert len(routes) >= 15
    for method, path in routes:
        response = await crm.client.request(method, path, content=body, headers=headers)
        assert_error(response, 400, "invalid_json")
    assert await events(crm, headers) == []
    assert await subscriptions(crm, headers) == []
    assert await clients(crm, headers) == []


async def test_realistic_bodies_with_one_bad_value_store_nothing(crm: Api) -> None:
    headers = {**await crm.key(), **JSON_HEADERS}
    subscription = {"url": "http://127.0.0.1:9/h", "eventTypes": ["client.created"]}
    client = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}
    cases = [
        ("/api/v1/webhooks/subscriptions", {**subscription, "description": "\ud800"}),
        ("/api/v1/webhooks/subscriptions", {**subscription, "description": "a\x00b"}),
        ("/api/v1/hooks", {"hookUrl": "http://127.0.0.1:9/h", "event": "client.\udfff"}),
        ("/api/v1/clients", {**client, "firstName": "Ad\ud800a"}),
        ("/api/v1/clients", {**client, "lastName": "Love\x00lace"}),
        ("/api/v1/clients", {**client, "address": {"\udbff": "x"}}),
    ]
    for path, body in cases:
        text = json.dumps(body)  # ASCII: a lone surrogate travels as its escape
        response = await crm.client.post(path, content=text, headers=headers)
        assert_error(response, 400, "invalid_json")
    text = json.dumps({**client, "email": "ada@example.com"}).replace('"Ada"', "NaN")
    assert_error(await crm.client.post("/api/v1/clients", content=text, headers=headers), 400)
    assert await subscriptions(crm, headers) == []
    assert await clients(crm, headers) == []
    assert await events(crm, headers) == []


@FUZZ
@given(json_values, st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]), st.integers(0, 50))
async def test_any_payload_with_a_non_finite_number_is_400(
    api: Api, document: Any, token: str, where: int
) -> None:
    headers = await api.key()
    marker = "__non_finite__"
    payload = json.dumps(_insert({"doc": document}, marker, where)).replace(f'"{marker}"', token)
    response = await api.client.post(
        "/api/v1/events", content=emit_body(payload), headers={**headers, **JSON_HEADERS}
    )
    assert_error(response, 400, "invalid_json")
    assert await events(api, headers) == []


# --- the URL and headers --------------------------------------------------------------------

URL_CASES = [
    ("/api/v1/events/evt_%00", 400),
    ("/api/v1/events/evt_%00/deliveries", 400),
    ("/api/v1/events/evt_%ED%A0%80", 404),  # not UTF-8: decoded with replacement characters
    ("/api/v1/events/evt_%F0%9F%98%80", 404),
    ("/api/v1/events?type=client.%00", 400),
    ("/api/v1/events?type=%ED%A0%80", 422),
    ("/api/v1/events?after=evt_%00", 400),
    ("/api/v1/events?after=evt_%ED%A0%80", 404),
    ("/api/v1/events?cursor=%ED%A0%80", 400),
    ("/api/v1/webhooks/subscriptions/sub_%00", 400),
    ("/api/v1/webhooks/subscriptions/sub_%ED%B0%80", 404),
    ("/api/v1/webhooks/subscriptions?cursor=%00", 400),
    ("/api/v1/clients/search?email=%00", 400),
    ("/api/v1/clients/search?name=%ED%A0%80", 200),
    ("/api/v1/leads/search?email=a%00b", 400),
    ("/api/v1/event-types/client.%00", 400),
]


@pytest.mark.parametrize(("path", "status"), URL_CASES)
async def test_hostile_paths_and_queries_are_4xx_never_500(
    crm: Api, path: str, status: int
) -> None:
    headers = await crm.key()
    response = await crm.client.get(path, headers=headers)
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert_error(response, status)


@pytest.mark.parametrize(
    ("key", "status"),
    [
        (b"\x00", 400),
        (b"retry-\x00-1", 400),
        (b"\xed\xa0\x80", 201),  # bytes of a surrogate: headers are Latin-1, so plain text
        (b"\\ud800", 201),
        (b"\xff\xfe", 201),
        (b"", 422),  # empty: not one key shared by every request that sends it empty
    ],
)
async def test_hostile_idempotency_keys_are_4xx_or_work(crm: Api, key: bytes, status: int) -> None:
    plain = await crm.key()
    headers = {**as_bytes(plain), b"Idempotency-Key": key}
    body = {"type": "client.created", "payload": {}}
    first = await crm.client.post("/api/v1/events", json=body, headers=headers)
    client = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}
    crm_first = await crm.client.post("/api/v1/clients", json=client, headers=headers)
    if status >= 400:
        code = {400: "bad_request", 422: "validation_error"}[status]
        assert_error(first, status, code)
        assert_error(crm_first, status, code)
        assert await events(crm, plain) == []
        assert await clients(crm, plain) == []
        return
    assert first.status_code == crm_first.status_code == 201, (first.text, crm_first.text)
    again = await crm.client.post("/api/v1/events", json=body, headers=headers)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    crm_again = await crm.client.post("/api/v1/clients", json=client, headers=headers)
    assert crm_again.json()["clientId"] == crm_first.json()["clientId"]


@FUZZ
@given(st.binary(max_size=12).filter(lambda raw: b"\r" not in raw and b"\n" not in raw))
async def test_any_bytes_in_ids_queries_and_keys_are_never_500(crm: Api, raw: bytes) -> None:
    headers = await crm.key()
    escaped = quote(raw, safe="")
    for path in (
        f"/api/v1/events/{escaped}",
        f"/api/v1/webhooks/subscriptions/{escaped}",
        f"/api/v1/events?type={escaped}&after={escaped}",
        f"/api/v1/clients/search?email={escaped}&name={escaped}",
    ):
        response = await crm.client.get(path, headers=headers)
        assert response.status_code < 500, (path, response.text)
        if response.status_code >= 400:
            assert_error(response, response.status_code)
    response = await crm.client.post(
        "/api/v1/events",
        json={"type": "client.created", "payload": {}},
        headers={**as_bytes(headers), b"Idempotency-Key": raw},
    )
    assert response.status_code < 500, response.text


# --- chunked bodies -------------------------------------------------------------------------


def chunked(body: bytes, size: int = 500) -> Any:
    """A body httpx sends chunked: a generator, so no Content-Length is known."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), size):
            yield body[start : start + size]

    return chunks()


async def test_a_chunked_body_over_the_limit_is_413_and_stores_nothing(crm: Api) -> None:
    headers = {**await crm.key(), **JSON_HEADERS}
    big = json.dumps({"type": "client.created", "payload": {"blob": "x" * 10_000}}).encode()
    request = crm.client.build_request(
        "POST", "/api/v1/events", content=chunked(big), headers=headers
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await crm.client.send(request)
    assert_error(response, 413, "payload_too_large")
    client = {"firstName": "A" * 5000, "lastName": "B", "email": "a@example.com"}
    response = await crm.client.post(
        "/api/v1/clients", content=chunked(json.dumps(client).encode()), headers=headers
    )
    assert_error(response, 413, "payload_too_large")
    login = b"api_key=" + b"k" * 10_000
    response = await crm.client.post(
        "/portal/login",
        content=chunked(login),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 413, "payload_too_large")  # not JSON: the limit holds all the same
    assert await events(crm, headers) == []
    assert await clients(crm, headers) == []


async def test_a_chunked_body_under_the_limit_arrives_whole(crm: Api) -> None:
    headers = {**await crm.key(), **JSON_HEADERS}
    body = {"type": "client.created", "payload": {"blob": "x" * 3000}}
    response = await crm.client.post(
        "/api/v1/events", content=chunked(json.dumps(body).encode(), 100), headers=headers
    )
    assert response.status_code == 201, response.text
    [stored] = await events(crm, headers)
    assert stored["payload"] == body["payload"]
    bad = chunked(json.dumps(body).replace('"x', 'NaN, "y": "x').encode(), 7)
    assert_error(await crm.client.post("/api/v1/events", content=bad, headers=headers), 400)
    assert len(await events(crm, headers)) == 1


async def test_a_client_that_leaves_mid_body_gets_nothing_stored(crm: Api) -> None:
    """The body is read before the app runs: a disconnect halfway stores nothing."""
    app = crm.client._transport.app  # type: ignore[attr-defined]
    headers = {**await crm.key(), **JSON_HEADERS}
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"type": "client.created", ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/events",
        "raw_path": b"/api/v1/events",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("tidings", 80),
    }
    await app(scope, receive, send)
    assert sent == []
    assert await events(crm, headers) == []


def as_bytes(headers: dict[str, str]) -> dict[bytes, bytes]:
    return {name.encode(): value.encode() for name, value in headers.items()}
