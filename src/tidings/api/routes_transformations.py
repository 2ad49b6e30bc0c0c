"""Transformations' dry run: a script run once on a sample envelope, nothing sent."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from tidings.api.auth import TidingsDep, WebhooksWriter
from tidings.api.schemas import (
    EVENT_TYPE,
    HTTP_URL,
    ErrorResponse,
    JsonObject,
    Reply,
    Request,
)
from tidings.domain.subscriptions import MAX_URL_LENGTH
from tidings.service import DRY_RUN_URL
from tidings.transform import MAX_SCRIPT_CHARS, Cancelled, TransformFailed, TransformUnavailable
from tidings.web.errors import ApiError

router = APIRouter(prefix="/api/v1/transformations", tags=["transformations"])

EXAMPLE_SCRIPT = """function handler(webhook) {
  const payment = webhook.payload.payload;
  if (payment.amount.amount < 100000) webhook.cancel = true;
  webhook.payload = {text: `${payment.clientId} paid ${payment.amount.amount / 100}`};
  return webhook;
}"""


class TransformationTest(Request):
    script: str = Field(
        min_length=1,
        max_length=MAX_SCRIPT_CHARS,
        description="JavaScript defining ``function handler(webhook)``, which gets "
        "``{method, url, eventType, payload, cancel}`` (``payload`` is the envelope) and "
        "returns it, changed.",
        examples=[EXAMPLE_SCRIPT],
    )
    event_type: str = Field(
        min_length=1, max_length=128, pattern=EVENT_TYPE, examples=["payment.succeeded"]
    )
    payload: JsonObject | None = Field(
        None,
        description="The event's payload; without it, the catalog's sample for "
        "``eventType``. Either way it is wrapped in an envelope as a test send's is.",
    )
    url: str | None = Field(
        None,
        max_length=MAX_URL_LENGTH,
        pattern=HTTP_URL,
        description=f"The ``url`` the handler sees (default ``{DRY_RUN_URL}``): a "
        "subscription's, to try a script that routes by it.",
    )


class TransformationResult(Reply):
    webhook: dict[str, Any] = Field(
        description="The object the handler returned: ``cancel: true`` means the delivery "
        "would be skipped (recorded as cancelled)."
    )
    body: str | None = Field(
        description="The body that would be sent and signed (the returned ``payload`` as "
        "JavaScript's ``JSON.stringify`` prints it); null when cancelled."
    )


@router.post(
    "/test",
    response_model=TransformationResult,
    responses={
        422: {
            "model": ErrorResponse,
            "description": "Invalid input, or the script failed (code "
            "``transformation_failed``; details: its message, kind and line)",
        }
    },
)
async def test_transformation(
    request: TransformationTest, key: WebhooksWriter, tidings: TidingsDep
) -> TransformationResult:
    """Run a transformation once on a sample envelope and show what would be sent. A script
    that does not compile, throws, runs out of time or memory, or returns something that
    cannot be sent is a 422 whose details give the message, the kind (``error``,
    ``timeout``, ``memory``) and the script's line."""
    try:
        outcome = await tidings.test_transformation(
            key.tenant_id,
            request.script,
            request.event_type,
            request.payload,
            request.url or DRY_RUN_URL,
        )
    except TransformUnavailable as exc:
        raise ApiError(503, "unavailable", f"transformations cannot run now: {exc}") from exc
    if isinstance(outcome, TransformFailed):
        details = [
            {
                "field": "script",
                "message": outcome.message,
                "kind": outcome.kind,
                "line": outcome.line,
            }
        ]
        raise ApiError(422, "transformation_failed", str(outcome), details)
    if isinstance(outcome, Cancelled):
        return TransformationResult(webhook=outcome.webhook, body=None)
    return TransformationResult(webhook=outcome.webhook, body=outcome.body)
