"""``POST /api/v1/transformations/test``: a script's dry run over the API and the client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Api
from tests.integration.test_api_errors import assert_error
from tidings.client import AsyncClient, Client, TidingsError, TransformationResult
from tidings.config import Settings
from tidings.service import DRY_RUN_URL

PATH = "/api/v1/transformations/test"
SLACK = """function handler(webhook) {
  const payment = webhook.payload.payload;
  if (payment.amount.amount < 100000) {
    webhook.cancel = true;
  }
  webhook.payload = {text: `${payment.clientId} paid ${payment.amount.amount / 100}`};
  return webhook;
}"""
SHOW = """function handler(webhook) {
  const envelope = webhook.payload;
  webhook.payload = {keys: Object.keys(envelope), type: envelope.type,
                     companyId: envelope.companyId, payload: envelope.payload,
                     metadata: envelope.metadata, eventType: webhook.eventType};
  return webhook;
}"""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The dry run stores nothing: one database is enough."""
    return f"sqlite:///{tmp_path / 'tidings.db'}"


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(transform_workers=1)


@pytest.fixture
async def writer(api: Api) -> dict[str, str]:
    return await api.key("acme", "webhooks:write")


async def dry_run(api: Api, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await api.client.post(PATH, json=body, headers=headers)


async def test_the_catalog_sample_is_transformed(api: Api, writer: dict[str, str]) -> None:
    response = await dry_run(api, writer, script=SLACK, eventType="payment.succeeded")
    assert response.status_code == 200, response.text
    result = response.json()
    sample = api.tidings.catalog.find("payment.succeeded")
    assert sample is not None
    text = f"{sample.sample['clientId']} paid {sample.sample['amount']['amount'] / 100:g}"
    assert result["webhook"] == {
        "method": "POST",
        "url": DRY_RUN_URL,
        "eventType": "payment.succeeded",
        "payload": {"text": text},
        "cancel": False,
    }
    assert result["body"] == json.dumps({"text": text}, separators=(",", ":"))


async def test_the_script_sees_the_envelope_a_test_send_carries(
    api: Api, writer: dict[str, str]
) -> None:
    response = await dry_run(
        api,
        writer,
        script=SHOW,
        eventType="Invoice.Paid",
        payload={"invoiceId": "inv_1", "total": 12.5},
        url="https://hooks.example.com/in",
    )
    assert response.status_code == 200, response.text
    webhook = response.json()["webhook"]
    tenant = (await api.tidings.authenticate(writer["X-Api-Key"])).tenant_id  # type: ignore[union-attr]
    assert webhook["url"] == "https://hooks.example.com/in"
    assert webhook["payload"] == {
        "keys": ["id", "type", "createdUtc", "companyId", "payload", "metadata"],
        "type": "invoice.paid",
        "companyId": tenant,
        "payload": {"invoiceId": "inv_1", "total": 12.5},
        "metadata": {"test": True},
        "eventType": "invoice.paid",
    }


async def test_a_cancel_is_shown_with_no_body(api: Api, writer: dict[str, str]) -> None:
    payload = {"clientId": "cli_1", "amount": {"amount": 500, "currency": "USD"}}
    response = await dry_run(
        api, writer, script=SLACK, eventType="payment.succeeded", payload=payload
    )
    assert response.status_code == 200, response.text
    assert response.json()["webhook"]["cancel"] is True
    assert response.json()["body"] is None


@pytest.mark.parametrize(
    ("script", "kind", "line", "message"),
    [
        (
            "function handler(w) {\n  const a = 1;\n  throw new Error('nope');\n}",
            "error",
            3,
            "nope",
        ),
        ("function handler(w) {\n  return w\n", "error", 3, "SyntaxError"),
        ("function handler(w) {\n  return w.payload.missing.deeper;\n}", "error", 2, "TypeError"),
        ("function handler(w) {\n  require('fs');\n}", "error", 2, "'require' is not defined"),
        ("function handler(w) {\n  while (true) {}\n}", "timeout", None, "time limit"),
        ("const x = 1;", "error", None, "must define function handler"),
        ("function handler(w) { return undefined }", "error", None, "returned undefined"),
        # found by review: each was a 500, or a 200 that every delivery then failed
        ("function handler(w) { w.url = 'ftp://x'; return w }", "error", None, "the url it set"),
        (
            "function handler(w) { w.payload = {s: '\\uD800'}; return w }",
            "error",
            None,
            "well-formed UTF-16",
        ),
        (
            "function handler(w) { let o = {}; for (let i = 0; i < 3000; i++) o = {o}; "
            "w.payload = o; return w }",
            "error",
            None,
            "nested deeper than",
        ),
    ],
)
async def test_a_failing_script_is_a_422_with_its_error(
    api: Api, writer: dict[str, str], script: str, kind: str, line: int | None, message: str
) -> None:
    response = await dry_run(api, writer, script=script, eventType="payment.succeeded")
    error = assert_error(response, 422, "transformation_failed")
    details: list[dict[str, Any]] = error["details"]  # type: ignore[assignment]
    [detail] = details
    assert detail["field"] == "script" and detail["kind"] == kind
    if line is not None:
        assert detail["line"] == line
    assert message in detail["message"] and message in str(error["message"])


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"eventType": "payment.succeeded"}, 422, "script"),
        ({"script": "", "eventType": "payment.succeeded"}, 422, "script"),
        ({"script": "x" * 64_001, "eventType": "payment.succeeded"}, 422, "script"),
        ({"script": SLACK}, 422, "eventType"),
        ({"script": SLACK, "eventType": "no.such.type"}, 422, "eventType"),
        ({"script": SLACK, "eventType": "bad type"}, 422, "eventType"),
        ({"script": SLACK, "eventType": "a.b", "payload": [1]}, 422, "payload"),
        ({"script": SLACK, "eventType": "a.b", "payload": {"n": 2**60}}, 400, "payload.n"),
        ({"script": SLACK, "eventType": "a.b", "url": "ftp://x"}, 422, "url"),
        ({"script": SLACK, "eventType": "a.b", "surprise": 1}, 422, "surprise"),
    ],
)
async def test_bad_input_is_a_4xx_in_the_error_shape(
    api: Api, writer: dict[str, str], body: dict[str, Any], status: int, field: str
) -> None:
    response = await api.client.post(PATH, json=body, headers=writer)
    error = assert_error(response, status)
    assert field in json.dumps(error["details"])


async def test_it_needs_webhooks_write(api: Api) -> None:
    body = {"script": SLACK, "eventType": "payment.succeeded"}
    assert_error(await api.client.post(PATH, json=body), 401, "unauthorized")
    for scopes in (["webhooks:read"], ["events:write", "events:read"]):
        response = await api.client.post(PATH, json=body, headers=await api.key("acme", *scopes))
        assert_error(response, 403, "forbidden")
    admin = await api.key("acme", "admin")
    assert (await api.client.post(PATH, json=body, headers=admin)).status_code == 200


async def test_it_is_in_the_openapi_document(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    operation = spec["paths"][PATH]["post"]
    assert "200" in operation["responses"]
    error = operation["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorResponse"}


async def test_shutdown_ends_the_engine_processes(
    make_settings: Callable[..., Settings],
) -> None:
    from tests.conftest import running_api

    async with running_api(make_settings(transform_workers=2)) as api:
        headers = await api.key("acme", "webhooks:write")
        response = await dry_run(api, headers, script=SLACK, eventType="payment.succeeded")
        assert response.status_code == 200
        pids = api.tidings.transforms.pids()
        assert len(pids) == 2
    assert not any(map(process_exists, pids))


def process_exists(pid: int) -> bool:
    """Running, or a zombie nobody reaped."""
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
async def client(api: Api, writer: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient("http://tidings", writer["X-Api-Key"], http_client=api.client) as c:
        yield c


async def test_the_async_client_runs_a_dry_run(client: AsyncClient) -> None:
    result = await client.transformations.test(SLACK, "payment.succeeded")
    assert isinstance(result, TransformationResult) and not result.cancelled
    assert result.webhook["payload"]["text"].endswith("paid 1299")
    assert result.body == json.dumps(result.webhook["payload"], separators=(",", ":"))
    cheap = {"clientId": "cli_1", "amount": {"amount": 1}}
    cancelled = await client.transformations.test(SLACK, "payment.succeeded", payload=cheap)
    assert cancelled.cancelled and cancelled.body is None
    with pytest.raises(TidingsError) as failed:
        await client.transformations.test(
            "function handler(w) {\n  throw new Error('x');\n}", "a.b", {}
        )
    assert (failed.value.status, failed.value.code) == (422, "transformation_failed")
    assert failed.value.details[0]["line"] == 2


def test_the_blocking_client_sends_the_same_call() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"webhook": {"url": "https://x.example", "payload": {"a": 1}}, "body": '{"a":1}'}
        return httpx.Response(200, json=body)

    with Client("http://tidings", "tdg_x", transport=httpx.MockTransport(answer)) as client:
        result = client.transformations.test(
            SLACK, "payment.succeeded", payload={"n": 1}, url="https://x.example"
        )
    assert result == TransformationResult(
        webhook={"url": "https://x.example", "payload": {"a": 1}}, body='{"a":1}'
    )
    [request] = seen
    assert (request.method, request.url.path) == ("POST", PATH)
    assert json.loads(request.content) == {
        "script": SLACK,
        "eventType": "payment.succeeded",
        "payload": {"n": 1},
        "url": "https://x.example",
    }
