"""The application core: what the HTTP API, the CLI and the dispatcher have in common.

``Tidings`` turns validated requests into domain objects and store calls; it owns the
store, the secret box and the HTTP sender, and runs the dispatcher when asked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import structlog
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver

from tidings.apps import App, load_apps
from tidings.config import Settings
from tidings.dispatcher.guard import BlockedAddress, GuardedResolver, check_host, refuse_literal
from tidings.dispatcher.retention import make_partitions, run_pruner
from tidings.dispatcher.sender import AiohttpSender, Sender, SenderFactory, SenderOptions
from tidings.dispatcher.worker import Dispatcher, DispatcherTuning
from tidings.domain import filters
from tidings.domain.cache import BoundedCache
from tidings.domain.catalog import Catalog
from tidings.domain.clock import now_ms
from tidings.domain.deliveries import AttemptResult, DisableReason
from tidings.domain.events import (
    Envelope,
    EventPattern,
    normalize_event_type,
)
from tidings.domain.ids import new_id
from tidings.domain.js_json import NOT_FINITE, first_unportable
from tidings.domain.ratelimit import TokenBucket
from tidings.domain.retry import InvalidRetryPolicy, RetryRules
from tidings.domain.signatures import (
    SignatureScheme,
    check_rsa_key,
    generate_rsa_key,
    generate_secret,
    generate_signing_key,
    public_key_of,
    signature_headers,
    validate_body_secret,
    validate_secret,
)
from tidings.domain.subscriptions import (
    InvalidHeaders,
    InvalidUrl,
    Ordering,
    Subscription,
    SubscriptionKind,
    normalize_patterns,
    validate_static_headers,
    validate_url_shape,
)
from tidings.metrics import Metrics
from tidings.secretbox import SecretBox
from tidings.storage import ApiKey, AppWork, Revocation, Revoked, Store, StoredEvent, open_store
from tidings.storage.errors import Outage, StorageUnavailable
from tidings.storage.records import SecretRotation
from tidings.supervision import TaskState, supervise
from tidings.tracing import from_environment as tracing_from_environment
from tidings.transform import (
    Cancelled,
    TransformEngine,
    TransformFailed,
    TransformOutcome,
    checked_target,
    webhook_for,
)

if TYPE_CHECKING:
    from tidings.tracing import Tracing

T = TypeVar("T")
log = structlog.get_logger("tidings")

API_KEY_PREFIX = "tdg_"
SCOPES = frozenset({"events:write", "events:read", "webhooks:read", "webhooks:write", "admin"})
SUBSCRIPTION_DISABLED = "subscription.disabled"
ENDPOINT_VERIFY = "endpoint.verify"
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_SIZE = 10_000
READY_TIMEOUT = 2.0
DRY_RUN_URL = "https://example.com/webhook"
"""The ``url`` a transformation's dry run shows its handler when not given one."""


class IdempotencyConflict(Exception):
    """An idempotency key reused for a different request."""


class NotFound(LookupError):
    """A record the request names does not exist for this tenant."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class Invalid(ValueError):
    """A request that is well-formed JSON but breaks a rule; ``field`` names the culprit.
    A 422 unless ``status`` says otherwise."""

    def __init__(
        self,
        field: str,
        message: str,
        code: str = "validation_error",
        status: int = 422,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.status = status
        self.details = dict(details or {})
        """More about the culprit than its name (a filter's operator, say)."""


def hash_api_key(plaintext: str) -> str:
    """API keys carry 256 random bits, so a plain SHA-256 is a safe, fast lookup hash."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def request_fingerprint(
    event_type: str, payload: Any, metadata: Any, ordering_key: str | None = None
) -> str:
    """What an idempotent retry must repeat exactly (the ordering key counts only if set,
    so fingerprints stored before it existed still match)."""
    parts = [event_type, payload, metadata] + ([ordering_key] if ordering_key else [])
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _refuse_unportable_numbers(
    payload: Mapping[str, Any], metadata: Mapping[str, Any] | None
) -> None:
    """A 400 naming the first number a receiver's ``JSON.parse`` would not read back as
    sent: an integer beyond ±(2^53 - 1), which every body must print as JavaScript does
    and so cannot hold exactly, or NaN/Infinity (an app's, since the API refuses them
    first), which JSON has no form for."""
    for part, value in (("payload", payload), ("metadata", metadata)):
        found = first_unportable(value, part)
        if found is not None:
            path, reason = found
            code = "invalid_json" if reason == NOT_FINITE else "unsafe_integer"
            raise Invalid(path, f"{path} {reason}", code, status=400)


@dataclass(frozen=True)
class SendReport:
    """What a receiver answered to one envelope sent now (a test send, a verification)."""

    success: bool
    status_code: int | None
    elapsed_ms: int
    response_body: str
    error: str | None


def _check_scopes(scopes: Sequence[str]) -> None:
    unknown = set(scopes) - SCOPES
    if unknown or not scopes:
        raise Invalid("scope", f"scopes must be among {sorted(SCOPES)}")


def _initial_disable(enabled: bool, awaiting_verification: bool) -> DisableReason | None:
    if not enabled:
        return DisableReason.MANUAL
    return DisableReason.UNVERIFIED if awaiting_verification else None


class Tidings:
    """The core every layer shares (API, portal, CLI, apps): keys, events, subscriptions,
    the dispatcher, and the installation's apps and event-type catalog."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        secretbox: SecretBox,
        apps: Sequence[App] = (),
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing
        """OpenTelemetry spans (``tidings.tracing``); None when tracing is off."""
        self._owns_tracing = False
        self.store = store
        self.secretbox = secretbox
        self.apps = tuple(apps)
        self.catalog = Catalog(t for app in self.apps for t in app.event_types)
        self._sender: Sender | None = None
        self._transforms: TransformEngine | None = None
        self._keys: BoundedCache[str, tuple[ApiKey, float]] = BoundedCache(KEY_CACHE_SIZE)
        self._buckets: BoundedCache[str, TokenBucket] = BoundedCache(KEY_CACHE_SIZE)
        self.metrics = Metrics()
        self.address_policy = settings.address_policy
        self.dispatcher_state = TaskState("dispatcher")
        self.pruner_state = TaskState("retention")
        self.current_dispatcher: Dispatcher | None = None
        self.resolver_factory: Callable[[], AbstractResolver] = ThreadedResolver

    @classmethod
    def from_settings(cls, settings: Settings) -> Tidings:
        store = open_store(settings.resolved_database_url)
        if not settings.encryption_key and not settings.development:
            log.warning(
                "encryption_key_from_data_dir",
                hint="set TIDINGS_ENCRYPTION_KEY so every process shares one key",
            )
        box = SecretBox.from_config(settings.encryption_key, settings.data_dir)
        tidings = cls(settings, store, box, load_apps(settings.apps))
        tidings.tracing = tracing_from_environment(os.environ)
        tidings._owns_tracing = tidings.tracing is not None
        return tidings

    @property
    def sender(self) -> Sender:
        """The one HTTP client; its resolver refuses forbidden addresses at connect time."""
        if self._sender is None:
            s = self.settings
            resolver = GuardedResolver(self.address_policy, self.resolver_factory)
            engine: SenderFactory = AiohttpSender
            if s.sender == "curl":
                from tidings.dispatcher.curl_sender import CurlSender  # pycurl only if used

                engine = CurlSender
            options = SenderOptions(
                s.delivery_timeout,
                s.dispatcher_concurrency,
                resolver,
                proxy=s.egress_proxy,
                ca_bundle=str(s.ca_bundle) if s.ca_bundle else None,
            )
            self._sender = engine(options)
        return self._sender

    @property
    def transforms(self) -> TransformEngine:
        """Runs subscriptions' JavaScript transformations; its processes start when the
        first script runs and end with ``close``."""
        if self._transforms is None:
            s = self.settings
            self._transforms = TransformEngine(
                workers=s.transform_workers,
                time_limit=s.transform_time_limit,
                memory_limit=s.transform_memory_limit_mb * 1024 * 1024,
                max_output=s.max_request_bytes,
            )
        return self._transforms

    async def close(self) -> None:
        if self._sender is not None:
            await self._sender.close()
            self._sender = None
        if self._transforms is not None:
            await self._transforms.close()
            self._transforms = None
        await self.store.close()
        if self._owns_tracing and self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports what is left
            self._owns_tracing = False

    # --- keys -------------------------------------------------------------------------

    async def create_api_key(self, tenant_name: str, scopes: Sequence[str]) -> tuple[ApiKey, str]:
        """A key for the tenant of this name (created if new), and its plaintext."""
        _check_scopes(scopes)
        tenant = await self.store.keys.ensure_tenant(tenant_name)
        return await self.create_tenant_key(tenant.id, scopes)

    async def create_tenant_key(self, tenant_id: str, scopes: Sequence[str]) -> tuple[ApiKey, str]:
        """A key for an existing tenant, and its plaintext: shown once, stored only hashed."""
        _check_scopes(scopes)
        plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key = await self.store.keys.insert_api_key(
            tenant_id, hash_api_key(plaintext), plaintext[:12], scopes
        )
        return key, plaintext

    async def revoke_api_key(
        self, key_id: str, tenant_id: str | None = None, *, keep_last_admin: bool = True
    ) -> Revoked:
        """Revoke a key and end the portal sessions opened with it.

        In this process it stops working at once (its cache entry goes too); other API
        processes may still accept it for up to ``KEY_CACHE_SECONDS`` from their cache.
        Portal sessions have no cache: they end everywhere at once. ``tenant_id`` scopes
        the lookup (None: any tenant's key, for the operator's CLI); ``keep_last_admin``
        refuses to revoke the tenant's only admin key, so the API and the portal cannot
        lock a tenant out (the CLI can always create another)."""
        now = int(time.time() * 1000)
        revoked = await self.store.keys.revoke_api_key(key_id, tenant_id, now, keep_last_admin)
        if revoked.outcome in (Revocation.REVOKED, Revocation.ALREADY_REVOKED):
            self._forget_key(key_id)
        return revoked

    def _forget_key(self, key_id: str) -> None:
        for key_hash in [h for h, (key, _) in self._keys.items() if key.id == key_id]:
            self._keys.pop(key_hash)
        self._buckets.pop(key_id)

    def throttle(self, key: ApiKey) -> float | None:
        """None if ``key`` may make another request now; else seconds until it may.

        Per API process: N processes behind a load balancer allow N times the rate.
        """
        rate = self.settings.api_rate_limit
        if not rate:
            return None
        bucket = self._buckets.get(key.id)
        if bucket is None:
            bucket = self._buckets.put(key.id, TokenBucket(rate, burst=2 * rate))
        now = time.monotonic()
        return None if bucket.take(now) else bucket.wait_seconds(now)

    async def authenticate(self, plaintext: str) -> ApiKey | None:
        """Look a key up by its hash; valid keys are remembered for ``KEY_CACHE_SECONDS``
        so a busy client does not cost a database read per request (which is also how
        long another process's revocation may take to reach this one)."""
        return await self.authenticate_hash(hash_api_key(plaintext))

    async def authenticate_hash(self, key_hash: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._keys.get(key_hash)
        if cached is not None and cached[1] > now:
            return cached[0]
        key = await self.store.keys.find_api_key(key_hash)
        if key is not None:
            self._keys.put(key_hash, (key, now + KEY_CACHE_SECONDS))
        return key

    # --- events -----------------------------------------------------------------------

    async def emit(
        self,
        tenant_id: str,
        event_type: str,
        payload: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        ordering_key: str | None = None,
    ) -> tuple[StoredEvent, bool]:
        """Store an event and queue it for every matching subscription.

        Re-emitting with the same idempotency key returns the first event; with a
        different request it raises IdempotencyConflict. ``ordering_key`` orders the event among
        those of its key on FIFO subscriptions; it is stored, not delivered.
        """
        if idempotency_key is not None and not idempotency_key.strip():
            raise Invalid("Idempotency-Key", "Idempotency-Key must not be empty")
        tracing = self.tracing
        if tracing is None:
            draft = self.draft_event(tenant_id, event_type, payload, metadata, ordering_key)
            stored, created = await self.store.events.insert_event(draft, idempotency_key)
        else:
            args = (tenant_id, event_type, payload, metadata, idempotency_key, ordering_key)
            draft, stored, created = await self._traced_insert(tracing, *args)
        if created:
            self.metrics.events_emitted.labels(stored.type).inc()
            log.debug("event_emitted", event_id=stored.id, type=stored.type, tenant_id=tenant_id)
        if not created and stored.request_hash != draft.request_hash:
            raise IdempotencyConflict("Idempotency-Key was already used for a different event")
        return stored, created

    async def _traced_insert(
        self,
        tracing: Tracing,
        tenant_id: str,
        event_type: str,
        payload: Mapping[str, Any],
        metadata: Mapping[str, Any] | None,
        idempotency_key: str | None,
        ordering_key: str | None,
    ) -> tuple[StoredEvent, StoredEvent, bool]:
        """``emit``'s draft and store in spans: ``tidings.emit`` around both,
        ``tidings.fan_out`` around the store's transaction. The fan-out's context is stored
        with the event, so each attempt (in any worker process) is its child in the same
        trace. Returns the draft, the stored event and whether it is new."""
        with tracing.span("tidings.emit", {"tidings.tenant.id": tenant_id}) as span:
            draft = self.draft_event(tenant_id, event_type, payload, metadata, ordering_key)
            span.set_attribute("tidings.event.id", draft.id)
            span.set_attribute("tidings.event.type", draft.type)
            fan_out = {"tidings.tenant.id": tenant_id, "tidings.event.id": draft.id}
            with tracing.span("tidings.fan_out", fan_out) as queued:
                draft = dataclasses.replace(draft, trace_context=tracing.current_traceparent())
                stored, created = await self.store.events.insert_event(draft, idempotency_key)
                queued.set_attribute("tidings.event.created", created)
                if not created:  # an idempotent replay: the first emit's event and trace
                    queued.set_attribute("tidings.event.id", stored.id)
            if not created and stored.request_hash != draft.request_hash:
                tracing.failed(span, "IdempotencyConflict")  # emit raises it
            return draft, stored, created

    async def transaction(self, work: AppWork[T]) -> T:
        """Run an app's ``work`` in one write transaction: the rows it writes on ``conn``
        (a SQLAlchemy ``Connection``: apps get the database as it is) and the events it
        emits with ``outbox.add(tidings.draft_event(...))`` commit together or not at all
        (the transactional outbox). ``work`` is synchronous and runs off the event loop."""
        return await self.store.apps.in_transaction(work)

    def draft_event(
        self,
        tenant_id: str,
        event_type: str,
        payload: Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        ordering_key: str | None = None,
    ) -> StoredEvent:
        """A validated event ready for ``Outbox.add`` (or ``Store.insert_event``); every
        emit comes here, so this is where numbers JavaScript cannot read back are refused."""
        name = normalize_event_type(event_type)
        _refuse_unportable_numbers(payload, metadata)
        envelope = Envelope.new(name, tenant_id, payload, metadata)
        body = envelope.to_json()
        try:
            body.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate, from an app (the API refuses it)
            raise Invalid("payload", "text must be valid Unicode", "invalid_json", 400) from exc
        return StoredEvent(
            0,
            envelope.id,
            tenant_id,
            name,
            envelope.created_ms,
            body,
            request_fingerprint(name, payload, envelope.metadata, ordering_key),
            ordering_key,
            # the outbox's events join the trace of whatever is current (an app's request)
            self.tracing.current_traceparent() if self.tracing is not None else None,
        )

    async def redeliver(
        self, tenant_id: str, event: StoredEvent, subscription_id: str | None
    ) -> list[str]:
        """Queue ``event`` again: for one subscription, or for every enabled one that
        wants it now. Filters hold as on emit: a subscription whose filter the event fails
        is left out (named, a 409 explaining why)."""
        envelope = json.loads(event.body)
        if subscription_id is not None:
            sub = await self.store.subscriptions.get(tenant_id, subscription_id)
            if sub is None or not sub.enabled:
                raise NotFound("subscription")
            if not filters.matches(sub.filter, envelope):
                raise Invalid(
                    "subscriptionId",
                    "the event does not pass this subscription's filter",
                    "filtered",
                    status=409,
                )
            targets = [sub.id]
        else:
            subs = await self.store.subscriptions.matching(tenant_id, event.type)
            targets = [s.id for s in subs if filters.matches(s.filter, envelope)]
        await self.store.events.enqueue(event, targets)
        return targets

    def test_filter(self, spec: Any, envelope: Any) -> bool:
        """The dry run: whether ``envelope`` passes ``spec`` (a 422 if it is no valid
        filter). An empty filter passes everything."""
        checked = checked_filter(spec)
        return checked is None or filters.compile_filter(checked)(envelope)

    # --- subscriptions ----------------------------------------------------------------

    async def check_url(self, url: str) -> str:
        """The URL's shape, an IP literal host against the address policy, then (outside
        development) every address a named host resolves to.

        Development looks no name up: a developer's names may only exist later (a
        container not started yet). The dispatcher checks again at connect time, names
        included; this check is for a clear 422 now.
        """
        validate_url_shape(url, allow_http=self.settings.development)
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            refuse_literal(host, self.address_policy)
            if not self.settings.development:
                await check_host(host, port, self.address_policy, self.resolver_factory)
        except BlockedAddress as exc:
            raise InvalidUrl(f"url is not allowed: {exc}") from exc
        return url

    async def check_patterns(self, tenant_id: str, raw: Sequence[str]) -> tuple[str, ...]:
        try:
            patterns = normalize_patterns(raw)
        except ValueError as exc:  # InvalidEventType, or too few or too many
            raise Invalid("eventTypes", str(exc)) from exc
        for text in patterns:
            if EventPattern(text).is_wildcard or self.catalog.find(text) is not None:
                continue
            if not await self.store.events.event_type_seen(tenant_id, text):
                raise Invalid(
                    "eventTypes",
                    f"unknown event type {text!r}: see GET /api/v1/event-types",
                )
        return patterns

    async def create_subscription(
        self,
        tenant_id: str,
        url: str,
        event_types: Sequence[str],
        *,
        enabled: bool = True,
        description: str | None = None,
        signing_secret: str | None = None,
        kind: SubscriptionKind = SubscriptionKind.WEBHOOK,
        max_concurrency: int | None = None,
        rate_limit: float | None = None,
        signature_scheme: SignatureScheme | str = SignatureScheme.HMAC,
        awaiting_verification: bool = False,
        ordering: Ordering | None = None,
        retry_policy: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        propagate_trace: bool = False,
        filter: Mapping[str, Any] | None = None,
        transformation: str | None = None,
    ) -> tuple[Subscription, str | None]:
        """Returns the subscription and its secret, to be shown once (``whsec_``; ``whsk_``
        for ``ed25519``, whose public key is on the subscription; None for ``rsa-sha256``:
        its private key never leaves tidings). ``headers`` are sent with every delivery,
        stored encrypted. ``filter`` is checked (``domain/filters.py``): events that fail it
        get no delivery. ``transformation`` must compile and run its top level (a 422 with
        the script's error otherwise)."""
        try:
            await self.check_url(url)
        except InvalidUrl as exc:
            raise Invalid("url", str(exc)) from exc
        patterns = await self.check_patterns(tenant_id, event_types)
        scheme = SignatureScheme(signature_scheme)
        static = _checked_headers(headers or {})
        retry = _checked_retry(retry_policy)
        spec = checked_filter(filter)
        script = await self.checked_transformation(tenant_id, transformation)
        secret, public_key = await self._new_secret(scheme, signing_secret)
        now = now_ms()
        sub = Subscription(
            id=new_id("sub", now),
            tenant_id=tenant_id,
            url=url,
            event_types=patterns,
            enabled=enabled and not awaiting_verification,
            description=description,
            kind=kind,
            disabled_reason=_initial_disable(enabled, awaiting_verification),
            consecutive_failures=0,
            created_ms=now,
            updated_ms=now,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            public_key=public_key,
            ordering=ordering,
            signature_scheme=scheme,
            retry=retry,
            header_names=tuple(static),
            propagate_trace=propagate_trace,
            filter=spec,
            transformation=script,
        )
        await self.store.subscriptions.insert(
            sub, self.secretbox.encrypt(secret), self._encrypted_headers(static)
        )
        return sub, _shown(scheme, secret)

    async def checked_transformation(self, tenant_id: str, script: str | None) -> str | None:
        """A transformation ready to store (None or blank: none), or the 422 with the
        script's error and line (also when the engine is not installed: it says how)."""
        if script is None or not script.strip():
            return None
        problem = await self.transforms.compile_check(script, tenant_id)
        if problem is not None:
            raise Invalid(
                "transformation",
                str(problem),
                "transformation_failed",
                details={"kind": problem.kind, "line": problem.line},
            )
        return script

    def _encrypted_headers(self, static: Mapping[str, str]) -> str | None:
        return self.secretbox.encrypt(json.dumps(dict(static))) if static else None

    def static_headers(self, headers_enc: str | None) -> dict[str, str]:
        """A subscription's static headers, decrypted (for a delivery)."""
        return json.loads(self.secretbox.decrypt(headers_enc)) if headers_enc else {}

    async def edit_subscription(
        self, subscription: Subscription, changes: Mapping[str, Any], verify: bool | None = None
    ) -> Subscription | None:
        """Apply ``changes`` (url, event_types, enabled, description, max_concurrency,
        rate_limit, ordering, retry_policy, headers, propagate_trace, filter, transformation),
        checking url, patterns, filter and transformation as on create; the next emit
        applies a new filter, the next attempt a new transformation.
        ``enabled: True`` resets the breaker; with verification on (``verify``, else the
        server setting) a new url stays disabled until it answers ``endpoint.verify``.
        ``retry_policy`` and ``headers`` replace the whole of each (None: none). The
        signature scheme cannot change. None if
        it was deleted."""
        checked = dict(changes)
        scheme = checked.pop("signature_scheme", None)
        if scheme is not None and SignatureScheme(scheme) is not subscription.signature_scheme:
            raise Invalid(
                "signatureScheme", "set at creation: create a new subscription for another"
            )
        if "retry_policy" in checked:
            checked["retry"] = _checked_retry(checked.pop("retry_policy"))
        if "filter" in checked:
            checked["filter"] = checked_filter(checked["filter"])
        if "transformation" in checked:
            checked["transformation"] = await self.checked_transformation(
                subscription.tenant_id, checked["transformation"]
            )
        if "headers" in checked:
            static = _checked_headers(checked.pop("headers") or {})
            checked.update(headers_enc=self._encrypted_headers(static), header_names=tuple(static))
        if checked.get("url") is not None:
            try:
                checked["url"] = await self.check_url(checked["url"])
            except InvalidUrl as exc:
                raise Invalid("url", str(exc)) from exc
        if checked.get("event_types") is not None:
            checked["event_types"] = await self.check_patterns(
                subscription.tenant_id, checked["event_types"]
            )
        if "ordering" in checked:
            checked["ordering"] = Ordering(checked["ordering"]) if checked["ordering"] else None
        wants_verification = self.settings.verify_endpoints if verify is None else verify
        if "url" in checked and wants_verification:
            checked.update(enabled=False, disabled_reason=DisableReason.UNVERIFIED.value)
        return await self.store.subscriptions.update(
            subscription.tenant_id, subscription.id, checked
        )

    async def verify_if_waiting(
        self, subscription: Subscription
    ) -> tuple[Subscription, SendReport | None]:
        """Send ``endpoint.verify`` to a subscription that waits for it; enabled on 2xx."""
        if subscription.disabled_reason is not DisableReason.UNVERIFIED:
            return subscription, None
        result = await self.verify_endpoint(subscription)
        refreshed = await self.store.subscriptions.get(subscription.tenant_id, subscription.id)
        return refreshed or subscription, result

    async def _new_secret(
        self, scheme: SignatureScheme, given: str | None
    ) -> tuple[str, str | None]:
        """A new secret of ``scheme`` (or ``given``, once checked) and its public key.
        RSA keys are made and checked in a thread: 60-500 ms of CPU with the GIL held
        (2048-4096 bits, measured) that would stall every other request."""
        try:
            if scheme is SignatureScheme.ED25519:
                key = given or generate_signing_key()
                return key, public_key_of(key)  # raises unless a whsk_ key
            if scheme is SignatureScheme.RSA_SHA256:
                bits = self.settings.rsa_key_bits
                pem = given if given else await asyncio.to_thread(generate_rsa_key, bits)
                return pem, await asyncio.to_thread(check_rsa_key, pem)
            if scheme is SignatureScheme.HMAC_BODY and given:
                return validate_body_secret(given), None
            return (validate_secret(given) if given else generate_secret()), None
        except ValueError as exc:
            raise Invalid("signingSecret", str(exc)) from exc

    async def rotate_secret(
        self, subscription: Subscription, signing_secret: str | None = None
    ) -> tuple[Subscription, str | None]:
        """A new secret of the same scheme (shown once, as on create). For the grace
        period the old one signs beside it, or, for schemes that send one signature,
        instead of it; rotating such a subscription again within its grace period
        replaces the new secret but keeps the old one signing (receivers hold that one)."""
        scheme = subscription.signature_scheme
        secret, public_key = await self._new_secret(scheme, signing_secret)
        grace_until = int((time.time() + self.settings.secret_rotation_grace) * 1000)
        rotation = SecretRotation(
            self.secretbox.encrypt(secret),
            public_key,
            grace_until,
            keep_previous=scheme.signs_once and _in_grace(subscription),
        )
        rotated = await self.store.subscriptions.rotate_secret(
            subscription.tenant_id, subscription.id, rotation
        )
        if rotated is None:
            raise Invalid("id", "subscription vanished")
        return rotated, _shown(scheme, secret)

    async def end_rotation(self, subscription: Subscription) -> Subscription:
        """End a rotation's grace period now: only the new secret signs from here on, and
        the old one is forgotten."""
        if not _in_grace(subscription):
            raise Invalid("id", "no rotation is in its grace period", code="conflict", status=409)
        ended = await self.store.subscriptions.update(
            subscription.tenant_id,
            subscription.id,
            {
                "previous_secret_expires_ms": None,
                "previous_secret_enc": None,
                "previous_public_key": None,
            },
        )
        if ended is None:
            raise Invalid("id", "subscription vanished")
        return ended

    async def test_delivery(
        self, subscription: Subscription, event_type: str, use_sample: bool
    ) -> SendReport:
        """Send one signed envelope now and report what the receiver said; nothing is stored."""
        known = self.catalog.find(event_type)
        if known is None:
            raise Invalid("eventType", f"unknown event type {event_type!r}")
        payload = dict(known.sample) if use_sample else {}
        return await self._send_now(
            subscription, known.name, payload, {"test": True}, transform=True
        )

    async def test_transformation(
        self,
        tenant_id: str,
        script: str,
        event_type: str,
        payload: Mapping[str, Any] | None,
        url: str = DRY_RUN_URL,
    ) -> TransformOutcome:
        """Run ``script`` once on the envelope a test send of ``event_type`` would carry:
        the catalog's sample payload, or ``payload``. Nothing is sent or stored (nor the
        compiled script kept); a url it sets must pass the URL checks a delivery's does
        (else a failure, as a delivery's); raises ``TransformUnavailable`` if the engine
        cannot run."""
        if payload is None:
            known = self.catalog.find(event_type)
            if known is None:
                raise Invalid("eventType", f"unknown event type {event_type!r}")
            event_type, payload = known.name, dict(known.sample)
        else:
            event_type = normalize_event_type(event_type)
            _refuse_unportable_numbers(payload, None)
        envelope = Envelope.new(event_type, tenant_id, payload, {"test": True})
        return await self.try_transformation(tenant_id, script, url, envelope.to_dict())

    async def try_transformation(
        self, tenant_id: str, script: str, url: str, envelope: Mapping[str, Any]
    ) -> TransformOutcome:
        """Run ``script`` once on ``envelope`` as a delivery to ``url`` would (the url it
        sets checked as a delivery's is); nothing is sent, stored or kept compiled."""
        webhook = webhook_for(url, envelope)
        outcome = await self.transforms.run(tenant_id, script, webhook, keep=False)
        return checked_target(outcome, url, self.settings.development)

    async def verify_endpoint(self, subscription: Subscription) -> SendReport:
        """Send ``endpoint.verify`` now; a 2xx enables the subscription (if it waited for it)."""
        challenge = secrets.token_urlsafe(24)
        payload = {"subscriptionId": subscription.id, "challenge": challenge}
        result = await self._send_now(subscription, ENDPOINT_VERIFY, payload, {})
        if result.success and subscription.disabled_reason is DisableReason.UNVERIFIED:
            await self.store.subscriptions.update(
                subscription.tenant_id, subscription.id, {"enabled": True}
            )
        return result

    def sample_envelope(
        self, tenant_id: str, event_type: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        """An envelope shaped like a real one, for previews; not stored."""
        return Envelope.new(event_type, tenant_id, payload, {"sample": True}).to_dict()

    async def _send_now(
        self,
        subscription: Subscription,
        event_type: str,
        payload: Mapping[str, Any],
        metadata: Mapping[str, Any],
        *,
        transform: bool = False,
    ) -> SendReport:
        """POST one signed envelope now and report the answer; nothing is stored. With
        ``transform`` (test sends), the subscription's transformation runs first, as on a
        delivery: what it cancels or fails is reported, not sent."""
        subs = self.store.subscriptions
        encrypted = await subs.secrets(subscription.tenant_id, subscription.id)
        if not encrypted:
            raise Invalid("id", "subscription vanished")
        envelope = Envelope.new(event_type, subscription.tenant_id, payload, metadata)
        url, body = subscription.url, envelope.to_json().encode()
        if transform and subscription.transformation:
            webhook = webhook_for(url, envelope.to_dict())
            outcome = await self.transforms.run(
                subscription.tenant_id, subscription.transformation, webhook
            )
            if isinstance(outcome, Cancelled):
                return SendReport(False, None, 0, "", "cancelled by the transformation")
            if isinstance(outcome, TransformFailed):
                return SendReport(False, None, 0, "", f"transformation: {outcome}")
            url, body = await self._transformed_target(outcome.url, url), outcome.body.encode()
        headers = self.static_headers(await subs.headers(subscription.tenant_id, subscription.id))
        headers |= await asyncio.to_thread(
            signature_headers,
            [self.secretbox.decrypt(s) for s in encrypted],
            envelope.id,
            envelope.created_ms // 1000,
            body,
            subscription.signature_scheme,
        )
        result: AttemptResult = await self.sender.post(url, body, headers)
        return SendReport(
            result.succeeded,
            result.status_code,
            result.elapsed_ms,
            result.response_body,
            result.error,
        )

    async def _transformed_target(self, url: str, stored: str) -> str:
        """A url a transformation set, checked as a subscription's is (the sender's guard
        checks the address it connects to, as for every POST)."""
        if url == stored:
            return url
        try:
            return await self.check_url(url)
        except InvalidUrl as exc:
            raise Invalid("transformation", f"the url it set: {exc}") from exc

    async def disable_subscription(
        self, tenant_id: str, subscription_id: str, reason: DisableReason, streak: int
    ) -> None:
        """Disable (the breaker, or a 410 Gone) and tell the tenant through its own event
        stream, which they may subscribe to; nothing happens if it was disabled already."""
        sub = await self.store.subscriptions.disable(tenant_id, subscription_id, reason)
        if sub is None:
            return
        log.warning("subscription_disabled", subscription_id=subscription_id, reason=reason.value)
        self.metrics.breaker_trips.labels(reason.value).inc()
        await self.emit(
            tenant_id,
            SUBSCRIPTION_DISABLED,
            {
                "subscriptionId": subscription_id,
                "url": sub.url,
                "reason": reason.value,
                "consecutiveFailures": streak,
                "disabledUtc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )

    # --- the dispatcher ---------------------------------------------------------------

    def dispatcher(self) -> Dispatcher:
        s = self.settings
        return Dispatcher(
            self.store.queue,
            self.sender,
            self.secretbox,
            s.retry_policy,
            self.disable_subscription,
            breaker_threshold=s.breaker_threshold,
            tuning=DispatcherTuning.from_settings(s),
            metrics=self.metrics,
            tracing=self.tracing,
            transforms=self.transforms,
            allow_http=s.development,
        )

    async def run_dispatcher(self, stop: asyncio.Event) -> None:
        """Deliver, and prune past the retention period, until ``stop`` is set; each under
        a supervisor that restarts it if it crashes (raises ``Fatal`` if it keeps on)."""
        s = self.settings

        async def prune() -> None:
            await run_pruner(
                self.store.retention,
                self.store.queue,
                stop,
                retention_days=s.retention_days,
                body_retention_days=s.response_body_retention_days,
                batch=s.prune_batch_size,
                interval=s.prune_interval,
                partition_rows=s.partition_rows,
            )

        async def deliver() -> None:
            self.current_dispatcher = self.dispatcher()
            await self.current_dispatcher.run(stop)

        tasks = [
            asyncio.create_task(supervise(self.dispatcher_state, deliver, stop)),
            asyncio.create_task(supervise(self.pruner_state, prune, stop)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_for_database(self, stop: asyncio.Event | None = None) -> None:
        """Migrate once the database answers, and make the partitions the next rows go
        to (PostgreSQL): a process started during an outage waits for it (logged once)
        instead of exiting."""
        outage = Outage("database")
        while True:
            try:
                await self.prepare_database()
            except StorageUnavailable as exc:
                await outage.failed(exc, stop)
                if stop is not None and stop.is_set():
                    return
                continue
            outage.succeeded()
            return

    async def prepare_database(self) -> None:
        """Migrate, then make the partitions ahead (until then, rows land in DEFAULT)."""
        await self.store.migrate()
        await make_partitions(self.store.retention, self.settings.partition_rows)

    async def readiness(self) -> dict[str, str]:
        """What is not ready (empty when ready): the database, the dispatcher."""
        problems: dict[str, str] = {}
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.store.ping()
        except (StorageUnavailable, TimeoutError) as exc:
            problems["database"] = type(exc).__name__
        if self.dispatcher_state.failed:
            problems["dispatcher"] = "gave up after repeated crashes"
        elif self.current_dispatcher is not None and self.current_dispatcher.claims_failing:
            problems["dispatcher"] = "cannot reach the database"
        return problems


def checked_filter(raw: Any) -> dict[str, Any] | None:
    """A subscription's ``filter`` made ready to store (None: no filter), or the 422 that
    names the path and the operator at fault."""
    if raw is None:
        return None
    try:
        checked = filters.checked_filter(raw)
    except filters.InvalidFilter as exc:
        operator = {"operator": exc.operator} if exc.operator else {}
        raise Invalid(exc.field, str(exc), "invalid_filter", details=operator) from exc
    return checked[0] if checked is not None else None


def _checked_headers(raw: Mapping[str, str]) -> dict[str, str]:
    try:
        return validate_static_headers(raw)
    except InvalidHeaders as exc:
        raise Invalid(exc.field, str(exc)) from exc


def _checked_retry(raw: Mapping[str, Any] | None) -> RetryRules | None:
    if raw is None:
        return None
    try:
        return RetryRules.parse(raw)
    except InvalidRetryPolicy as exc:
        raise Invalid(exc.field, str(exc)) from exc


def _in_grace(subscription: Subscription) -> bool:
    expires = subscription.previous_secret_expires_ms
    return expires is not None and expires > now_ms()


def _shown(scheme: SignatureScheme, secret: str) -> str | None:
    """What the one answer that shows a secret shows: never an RSA private key (tidings
    signs; receivers need only the public key)."""
    return None if scheme is SignatureScheme.RSA_SHA256 else secret
