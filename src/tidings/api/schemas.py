"""Request and response bodies, in the API's camelCase."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
)
from pydantic.alias_generators import to_camel

from tidings.domain.events import format_utc, utc_from_ms
from tidings.domain.retry import MAX_BREAKER_THRESHOLD, MAX_DELAY_SECONDS, MAX_RETRIES
from tidings.domain.subscriptions import (
    MAX_HEADER_VALUE,
    MAX_STATIC_HEADERS,
    MAX_URL_LENGTH,
    Subscription,
)
from tidings.storage import ApiKeyInfo, AttemptRecord
from tidings.transform import MAX_SCRIPT_CHARS
from tidings.web.sessions import MAX_LINK_SECONDS

MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (a scalar: 0). Iterative: a body
    nested past Python's recursion limit gets its 422, not a 500."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def shallow_enough(value: dict[str, Any]) -> dict[str, Any]:
    """``value``, if nested at most ``MAX_JSON_DEPTH`` levels (deeper: a 422)."""
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(shallow_enough)]
"""A JSON object in a request, nested at most ``MAX_JSON_DEPTH`` levels."""


def utc(ms: int) -> str:
    return format_utc(utc_from_ms(ms))


class Request(BaseModel):
    """Strict: a JSON ``0`` is not a boolean and ``"5"`` is not a number."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )


class Reply(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


_WORD = r"[A-Za-z][A-Za-z0-9_-]*"
EVENT_TYPE = rf"^{_WORD}(\.{_WORD})+$"
EVENT_TYPE_LIST = rf"^{_WORD}(\.{_WORD})+(,{_WORD}(\.{_WORD})+)*$"
EVENT_PATTERN = rf"^(\*|{_WORD}(\.{_WORD})*\.\*|{_WORD}(\.{_WORD})+)$"
HTTP_URL = r"^[hH][tT][tT][pP][sS]?://[^\s/?#@]+([/?#]\S*)?$"
EventTypes = list[Annotated[str, Field(pattern=EVENT_PATTERN, max_length=130)]]


class EmitEvent(Request):
    type: str = Field(min_length=1, max_length=128, pattern=EVENT_TYPE, examples=["client.created"])
    payload: JsonObject
    metadata: JsonObject | None = None
    ordering_key: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="FIFO subscriptions receive the events of one key one at a time, in "
        "emit order. Stored with the event, not delivered in the envelope.",
        examples=["cli_42"],
    )


class EventEnvelope(Reply):
    """The envelope exactly as receivers get it."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    type: str
    createdUtc: str
    companyId: str
    payload: dict[str, Any]
    metadata: dict[str, Any]


class Redeliver(Request):
    subscription_id: str | None = None


class RedeliverResult(Reply):
    event_id: str
    subscription_ids: list[str]


PROPAGATE_TRACE = (
    "Send a W3C traceparent header with each delivery, so the receiver's spans join the "
    "event's trace (the server traces with OpenTelemetry: tidings[otel] and OTEL_*)."
)


FILTER = (
    "Only events that pass it are delivered, MongoDB-style on dotted paths of the envelope: "
    "$eq $ne $gt $gte $lt $lte $in $nin $exists $regex (RE2, $options: i m s) $not on a "
    "path, $and $or $not around conditions; a bare value means $eq. Arrays on a path match "
    "if any element does; comparisons across types are false. Test sends ignore it."
)
FILTER_EXAMPLE = {"payload.amount.amount": {"$gte": 1000}, "payload.method": {"$in": ["card"]}}


TRANSFORMATION = (
    "JavaScript defining function handler(webhook), where webhook is {method, url, "
    "eventType, payload, cancel} (Svix's shape; payload is the envelope). What it returns "
    "is sent: its payload as the body (signed), its url (checked again), or nothing if "
    "cancel is true. Runs with no I/O, a time and a memory limit; a script that throws, "
    "loops or runs out of memory fails the delivery (not retried). Needs tidings[transform]."
)
TransformationScript = Annotated[
    str, Field(min_length=1, max_length=MAX_SCRIPT_CHARS, description=TRANSFORMATION)
]


FilterSpec = Annotated[
    dict[str, Any],
    Field(description=FILTER, examples=[FILTER_EXAMPLE]),
    AfterValidator(shallow_enough),
]


class CreateSubscription(Request):
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH, pattern=HTTP_URL)
    event_types: EventTypes = Field(min_length=1, max_length=100)
    enabled: bool = True
    description: str | None = Field(None, max_length=1000)
    signing_secret: str | None = Field(
        None,
        max_length=4000,
        description="Bring your own: a whsec_ secret, a whsk_ key (ed25519), or an RSA "
        "private key PEM of 2048 bits or more (rsa-sha256). Generated if absent.",
    )
    max_concurrency: int | None = Field(
        None, ge=1, le=1000, description="Deliveries in flight at once, over every worker."
    )
    rate_limit: float | None = Field(
        None, ge=0.001, le=10_000, description="Deliveries per second, over every worker."
    )
    ordering: Literal["fifo"] | None = Field(
        None, description="fifo: the events of one orderingKey arrive one at a time, in order."
    )
    signature_scheme: Scheme = Field(
        "hmac",
        description="hmac (default): X-Webhook-Signature and Standard Webhooks v1; ed25519: "
        "v1a, verified with publicKey; hmac-body: sha256=<hex> HMAC of the body alone; "
        "rsa-sha256: X-WH-Signature, verified with the publicKey PEM.",
    )
    verify_endpoint: bool | None = Field(
        None, description="Send endpoint.verify and enable only on 2xx (default: server)."
    )
    retry_policy: RetryPolicyBody | None = None
    headers: StaticHeaders | None = None
    propagate_trace: bool = Field(False, description=PROPAGATE_TRACE)
    filter: FilterSpec | None = None
    transformation: TransformationScript | None = None


Scheme = Literal["hmac", "ed25519", "hmac-body", "rsa-sha256"]
RetryOnName = Literal["timeout", "connection", "408", "429", "5xx", "4xx", "3xx"]
StaticHeaders = Annotated[
    dict[str, Annotated[str, Field(max_length=MAX_HEADER_VALUE)]],
    Field(
        max_length=MAX_STATIC_HEADERS,
        description="Sent with every delivery (e.g. Authorization); stored encrypted, "
        "read back as names only. Names tidings sends itself are refused.",
        examples=[{"Authorization": "Bearer gateway-token"}],
    ),
]


class RetryPolicyBody(Request):
    """A subscription's own retry rules; each part left out keeps the instance's."""

    delays: list[Annotated[float, Field(ge=0, le=MAX_DELAY_SECONDS)]] | None = Field(
        None,
        max_length=MAX_RETRIES,
        description="Seconds before retry 1, 2, ... (at most 10 % jitter); len + 1 attempts.",
        examples=[[5, 30, 120, 600]],
    )
    retry_on: list[RetryOnName] | None = Field(
        None,
        description="Failures that are retried (default: all); others fail at once.",
        examples=[["timeout", "connection", "408", "429", "5xx"]],
    )
    breaker_threshold: int | None = Field(
        None, ge=1, le=MAX_BREAKER_THRESHOLD, description="Consecutive failures that disable it."
    )


class UpdateSubscription(Request):
    url: str | None = Field(None, min_length=1, max_length=MAX_URL_LENGTH, pattern=HTTP_URL)
    event_types: EventTypes | None = Field(None, min_length=1, max_length=100)
    enabled: bool | None = None
    description: str | None = Field(None, max_length=1000)
    max_concurrency: int | None = Field(None, ge=1, le=1000)
    rate_limit: float | None = Field(None, ge=0.001, le=10_000)
    ordering: Literal["fifo"] | None = Field(
        None, description="Applies to events emitted from now on."
    )
    verify_endpoint: bool | None = None
    signature_scheme: Scheme | None = Field(
        None, description="Set at creation; a different value is refused."
    )
    retry_policy: RetryPolicyBody | None = Field(None, description="Replaces it; null: none.")
    headers: StaticHeaders | None = Field(None, description="Replaces them all; null: none.")
    propagate_trace: bool | None = Field(None, description=PROPAGATE_TRACE)
    filter: FilterSpec | None = Field(None, description="Replaces it; null: none.")
    transformation: TransformationScript | None = Field(
        None, description="Replaces it; null: none."
    )


class SubscriptionOut(Reply):
    id: str
    url: str
    event_types: list[str]
    enabled: bool
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    description: str | None
    kind: str
    consecutive_failures: int
    max_concurrency: int | None
    rate_limit: float | None
    ordering: Literal["fifo"] | None
    signature_scheme: Scheme
    public_key: str | None = Field(
        description="ed25519: the whpk_ key; rsa-sha256: the PEM receivers verify with."
    )
    previous_public_key: str | None = Field(
        description="During a rotation's grace period, the old key's public half: for "
        "rsa-sha256 it is the one that still signs until the grace period ends."
    )
    retry_policy: dict[str, Any] | None = Field(
        description="Its own retry rules ({delays, retryOn, breakerThreshold}); null: the "
        "instance's."
    )
    headers: list[str] = Field(description="Names of its static headers (values never shown).")
    propagate_trace: bool = Field(description=PROPAGATE_TRACE)
    filter: dict[str, Any] | None = Field(description=FILTER + " Null: every event.")
    transformation: str | None = Field(description=TRANSFORMATION + " Null: none.")
    previous_secret_expires_utc: str | None = Field(
        description="After a rotation, until when the previous secret signs too."
    )
    created_utc: str
    updated_utc: str

    @classmethod
    def of(cls, sub: Subscription) -> SubscriptionOut:
        return cls(
            id=sub.id,
            url=sub.url,
            event_types=list(sub.event_types),
            enabled=sub.enabled,
            status="active" if sub.enabled else "disabled",
            disabled_reason=sub.disabled_reason.value if sub.disabled_reason else None,
            description=sub.description,
            kind=sub.kind.value,
            consecutive_failures=sub.consecutive_failures,
            max_concurrency=sub.max_concurrency,
            rate_limit=sub.rate_limit,
            ordering=sub.ordering.value if sub.ordering else None,
            signature_scheme=sub.signature_scheme.value,
            public_key=sub.public_key,
            previous_public_key=sub.previous_public_key if sub.previous_secret_expires_ms else None,
            retry_policy=sub.retry.to_dict() if sub.retry is not None else None,
            headers=list(sub.header_names),
            propagate_trace=sub.propagate_trace,
            filter=dict(sub.filter) if sub.filter is not None else None,
            transformation=sub.transformation,
            previous_secret_expires_utc=(
                utc(sub.previous_secret_expires_ms) if sub.previous_secret_expires_ms else None
            ),
            created_utc=utc(sub.created_ms),
            updated_utc=utc(sub.updated_ms),
        )


class Verified(SubscriptionOut):
    verification: TestDeliveryResult | None = Field(
        None, description="The endpoint.verify answer, when one was sent."
    )


class CreatedSubscription(Verified):
    signing_secret: str | None = Field(
        description="Shown only in this response; null for rsa-sha256, whose private key "
        "never leaves tidings (receivers need only publicKey)."
    )


class Recover(Request):
    since: AwareDatetime = Field(strict=False, examples=["2026-11-23T09:00:00Z"])
    """Failed deliveries of events created at or after this moment are queued again."""


class Recovered(Reply):
    queued: int


class CreatePortalLink(Request):
    ttl_seconds: int = Field(86_400, ge=60, le=MAX_LINK_SECONDS)
    can_manage: bool = False
    """Whether the link's holder may create, edit, test and delete subscriptions."""


class PortalLink(Reply):
    url: str
    expires_utc: str
    can_manage: bool


Scope = Literal["events:write", "events:read", "webhooks:read", "webhooks:write", "admin"]


class CreateApiKey(Request):
    scopes: list[Scope] = Field(min_length=1, max_length=5, examples=[["events:write"]])


class ApiKeyOut(Reply):
    """A key as it may be shown: never the key itself or its hash."""

    id: str
    prefix: str = Field(description="The key's first 12 characters, to tell keys apart.")
    scopes: list[Scope]
    created_utc: str
    revoked_utc: str | None = Field(description="When it was revoked; null while it works.")

    @classmethod
    def of(cls, info: ApiKeyInfo) -> ApiKeyOut:
        return cls(
            id=info.id,
            prefix=info.prefix,
            scopes=sorted(info.scopes),
            created_utc=utc(info.created_ms),
            revoked_utc=utc(info.revoked_ms) if info.revoked_ms is not None else None,
        )


class CreatedApiKey(ApiKeyOut):
    key: str = Field(description="The API key (X-Api-Key): shown only in this response.")


class RotateSecret(Request):
    signing_secret: str | None = Field(None, max_length=4000)


class TestDelivery(Request):
    event_type: str = Field(min_length=1, max_length=128, pattern=EVENT_TYPE)
    use_sample_payload: bool = True


class TestDeliveryResult(Reply):
    success: bool
    status_code: int | None
    elapsed_ms: int
    response_body: str
    error: str | None


AttemptStatus = Literal["succeeded", "failed", "cancelled"]
_ATTEMPT_STATUS: dict[str, AttemptStatus] = {"succeeded": "succeeded", "cancelled": "cancelled"}


class Attempt(Reply):
    id: int
    event_id: str
    subscription_id: str
    attempt: int
    status: AttemptStatus
    """``cancelled``: the subscription's transformation cancelled it (nothing was sent)."""
    status_code: int | None
    elapsed_ms: int
    response_body: str
    error: str | None
    created_utc: str

    @classmethod
    def of(cls, record: AttemptRecord) -> Attempt:
        return cls(
            id=record.id,
            event_id=record.event_id,
            subscription_id=record.subscription_id,
            attempt=record.attempt,
            status=_ATTEMPT_STATUS.get(record.outcome, "failed"),
            status_code=record.status_code,
            elapsed_ms=record.elapsed_ms,
            response_body=record.response_body,
            error=record.error,
            created_utc=utc(record.created_ms),
        )


class FilterTest(Request):
    filter: FilterSpec
    envelope: JsonObject = Field(
        description="An envelope as receivers get it ({id, type, createdUtc, companyId, "
        "payload, metadata}), or any JSON object.",
        examples=[{"type": "payment.succeeded", "payload": {"amount": {"amount": 1500}}}],
    )


class FilterTestResult(Reply):
    matches: bool


class EventTypeOut(Reply):
    name: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema")
    sample_payload: dict[str, Any]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody
