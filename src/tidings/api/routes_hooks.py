"""REST Hooks, as Zapier, n8n and Make expect them.

``POST /hooks`` with ``hookUrl`` (or Zapier's ``target_url``) and ``event`` subscribes;
``DELETE /hooks/{id}`` unsubscribes; ``GET /hooks/samples/{eventType}`` feeds the
"perform list" step with recent events (or the catalog sample when there are none). The
subscriptions are ordinary ones of kind ``rest_hook``: same queue, retries and logs, and
a 410 from the target disables them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tidings.api.auth import EventsReader, TidingsDep, WebhooksWriter
from tidings.api.schemas import EVENT_PATTERN, EVENT_TYPE, HTTP_URL
from tidings.domain.events import normalize_event_type
from tidings.domain.subscriptions import SubscriptionKind
from tidings.web.errors import not_found

router = APIRouter(prefix="/api/v1/hooks", tags=["rest hooks"])

SAMPLES = 3


class Subscribe(BaseModel):
    """Extra fields are ignored: integration platforms send their own bookkeeping."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    hook_url: str | None = Field(None, alias="hookUrl", max_length=2048, pattern=HTTP_URL)
    target_url: str | None = Field(None, max_length=2048, pattern=HTTP_URL)
    event: str = Field(max_length=130, pattern=EVENT_PATTERN)

    @model_validator(mode="after")
    def one_url(self) -> Subscribe:
        if not (self.hook_url or self.target_url):
            raise ValueError("hookUrl (or target_url) is required")
        return self

    @property
    def url(self) -> str:
        return self.hook_url or self.target_url or ""


class Subscribed(BaseModel):
    id: str
    hookUrl: str
    event: str


@router.post("", status_code=201, response_model=Subscribed)
async def subscribe(request: Subscribe, key: WebhooksWriter, tidings: TidingsDep) -> Subscribed:
    sub, _ = await tidings.create_subscription(
        key.tenant_id,
        request.url,
        [request.event],
        description="REST hook",
        kind=SubscriptionKind.REST_HOOK,
    )
    return Subscribed(id=sub.id, hookUrl=sub.url, event=sub.event_types[0])


@router.delete("/{hook_id}", status_code=204)
async def unsubscribe(hook_id: str, key: WebhooksWriter, tidings: TidingsDep) -> Response:
    sub = await tidings.store.subscriptions.get(key.tenant_id, hook_id)
    if sub is None or sub.kind is not SubscriptionKind.REST_HOOK:
        raise not_found("hook")
    await tidings.store.subscriptions.delete(key.tenant_id, hook_id)
    return Response(status_code=204)


@router.get("/samples/{event_type}", response_model=list[dict[str, Any]])
async def samples(
    event_type: Annotated[str, Path(max_length=128, pattern=EVENT_TYPE)],
    key: EventsReader,
    tidings: TidingsDep,
) -> list[dict[str, Any]]:
    """Recent events of this type, newest first; the catalog sample if there are none."""
    name = normalize_event_type(event_type)
    recent = await tidings.store.events.recent_events(key.tenant_id, name, SAMPLES)
    if recent:
        return [json.loads(event.body) for event in recent]
    known = tidings.catalog.find(name)
    if known is None:
        raise not_found("event type")
    return [tidings.sample_envelope(key.tenant_id, known.name, dict(known.sample))]
