"""Bad input: the JSON error shape with the right 4xx, and nothing stored half."""

from __future__ import annotations

import pytest

from tests.conftest import Api

pytestmark = pytest.mark.asyncio


def assert_error(response: object, status: int, code: str | None = None) -> dict[str, object]:
    import httpx

    assert isinstance(response, httpx.Response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    assert "Traceback" not in response.text
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]  # type: ignore[no-any-return]


async def test_missing_and_invalid_key_are_401(api: Api) -> None:
    assert_error(await api.client.get("/api/v1/events"), 401, "unauthorized")
    assert_error(await api.client.get("/api/v1/events", headers={"X-Api-Key": "tdg_wrong"}), 401)


async def test_missing_scope_is_403(api: Api) -> None:
    reader = await api.key("acme", "events:read")
    response = await api.client.post(
        "/api/v1/events", json={"type": "client.created", "payload": {}}, headers=reader
    )
    assert_error(response, 403, "forbidden")
    response = await api.client.get("/api/v1/webhooks/subscriptions", headers=reader)
    assert_error(response, 403, "forbidden")


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, None),
        (b"[]", 422, "validation_error"),
        (b'{"type": "client.created"}', 422, "validation_error"),
        (b'{"type": "client.created", "payload": [1]}', 422, "validation_error"),
        (b'{"type": 5, "payload": {}}', 422, "validation_error"),
        (b'{"type": "bad type!", "payload": {}}', 422, "validation_error"),
        (b'{"type": "client.created", "payload": {}, "metadata": "x"}', 422, None),
        (b'{"type": "client.created", "payload": {}, "surprise": 1}', 422, None),
    ],
)
async def test_bad_emit_is_rejected_and_stores_nothing(
    api: Api, content: bytes, status: int, code: str | None
) -> None:
    headers = {**await api.key(), "Content-Type": "application/json"}
    response = await api.client.post("/api/v1/events", content=content, headers=headers)
    assert_error(response, status, code)
    assert (await api.client.get("/api/v1/events", headers=headers)).json() == []


async def test_deeply_nested_payload_is_422(api: Api) -> None:
    headers = await api.key()
    payload: dict[str, object] = {}
    node = payload
    for _ in range(40):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    response = await api.client.post(
        "/api/v1/events", json={"type": "client.created", "payload": payload}, headers=headers
    )
    assert_error(response, 422)


async def test_oversized_body_is_413(start_api) -> None:  # type: ignore[no-untyped-def]
    async with start_api(max_request_bytes=2048) as api:
        headers = await api.key()
        big = {"type": "client.created", "payload": {"blob": "x" * 5000}}
        assert_error(await api.client.post("/api/v1/events", json=big, headers=headers), 413)
        assert (await api.client.get("/api/v1/events", headers=headers)).json() == []


async def test_bad_query_parameters(api: Api) -> None:
    headers = await api.key()
    assert_error(await api.client.get("/api/v1/events?limit=0", headers=headers), 422)
    assert_error(await api.client.get("/api/v1/events?limit=abc", headers=headers), 422)
    assert_error(await api.client.get("/api/v1/events?cursor=%%%", headers=headers), 400)
    assert_error(await api.client.get("/api/v1/events?cursor=czox", headers=headers), 400)
    assert_error(await api.client.get("/api/v1/events?type=BAD TYPE", headers=headers), 422)


async def test_unknown_ids_are_404(api: Api) -> None:
    headers = await api.key()
    for path in (
        "/api/v1/events/evt_nope",
        "/api/v1/events/evt_nope/deliveries",
        "/api/v1/webhooks/subscriptions/sub_nope",
        "/api/v1/webhooks/subscriptions/sub_nope/deliveries",
        "/api/v1/event-types/no.such",
        "/api/v1/nothing-here",
    ):
        assert_error(await api.client.get(path, headers=headers), 404)


async def test_per_key_rate_limit_is_429_with_retry_after(start_api) -> None:  # type: ignore[no-untyped-def]
    async with start_api(api_rate_limit=1) as api:  # slow enough for a loaded machine
        hot = await api.key("acme")
        calm = await api.key("acme")
        statuses = [
            (await api.client.get("/api/v1/events", headers=hot)).status_code for _ in range(2)
        ]
        assert statuses == [200] * 2, "a burst of twice the rate is allowed"
        limited = await api.client.get("/api/v1/events", headers=hot)
        error = assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 1
        assert error["details"] == {"retryAfterSeconds": limited.headers["Retry-After"]}
        assert (await api.client.get("/api/v1/events", headers=calm)).status_code == 200
