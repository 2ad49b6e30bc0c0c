"""What the portal says about a subscription's dialect: its signature scheme (who expects
it, the headers it sends, how to verify it) and its retry policy presets.

The verification snippets are files in ``snippets/`` (``{scheme}.node.js``,
``{scheme}.python.py``), read once at import; the templates escape them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tidings.domain.retry import RetryOn, RetryRules
from tidings.domain.signatures import SignatureScheme


@dataclass(frozen=True)
class Snippet:
    language: str
    """What the tab says: ``Node`` or ``Python``."""
    slug: str
    """For element ids: ``node`` or ``python``."""
    code: str


@dataclass(frozen=True)
class Scheme:
    scheme: SignatureScheme
    title: str
    who: str
    """One line: whose receivers expect it."""
    headers: tuple[tuple[str, str], ...]
    """(header name, what it carries): tidings' own first, then Standard Webhooks'."""
    key_label: str | None
    """What the receiver verifies with, when it is a public key; None for shared secrets."""
    snippets: tuple[Snippet, ...]


LANGUAGES = (("Node", "node", "node.js"), ("Python", "python", "python.py"))


def _snippets(scheme: SignatureScheme) -> tuple[Snippet, ...]:
    folder = resources.files("tidings.portal") / "snippets"
    return tuple(
        Snippet(language, slug, (folder / f"{scheme.value}.{suffix}").read_text("utf-8"))
        for language, slug, suffix in LANGUAGES
    )


_STANDARD = (
    ("webhook-id", "the event id (the Standard Webhooks message id)"),
    ("webhook-timestamp", "unix seconds"),
)
_DESCRIBED = {
    SignatureScheme.HMAC: (
        "HMAC-SHA256",
        "tidings and WhiteLabelCRO receivers, and Standard Webhooks (the standardwebhooks "
        "and svix libraries).",
        (
            ("X-Webhook-Id", "the event id: deduplicate on it"),
            ("X-Webhook-Timestamp", "unix seconds"),
            ("X-Webhook-Signature", 'sha256=<hex HMAC of "{timestamp}.{body}">'),
            *_STANDARD,
            ("webhook-signature", "v1,<base64 HMAC> (Standard Webhooks)"),
        ),
        None,
    ),
    SignatureScheme.ED25519: (
        "Ed25519",
        "Standard Webhooks, asymmetric: receivers verify with a public key and hold no secret.",
        (
            ("X-Webhook-Id", "the event id: deduplicate on it"),
            ("X-Webhook-Timestamp", "unix seconds"),
            *_STANDARD,
            ("webhook-signature", 'v1a,<base64 Ed25519 signature of "{id}.{timestamp}.{body}">'),
        ),
        "Public key (whpk_)",
    ),
    SignatureScheme.HMAC_BODY: (
        "HMAC-SHA256 of the body",
        "Workestra-style receivers: an HMAC of the raw body alone, no timestamp.",
        (
            ("X-Webhook-Id", "the event id: deduplicate on it"),
            ("X-Webhook-Signature", "sha256=<hex HMAC of the body>"),
        ),
        None,
    ),
    SignatureScheme.RSA_SHA256: (
        "RSA SHA-256",
        "GoHighLevel-style receivers: an RSA signature verified with a public key (PEM).",
        (
            ("X-Webhook-Id", "the event id: deduplicate on it"),
            ("X-WH-Signature", "<base64 RSASSA-PKCS1-v1_5 SHA-256 signature of the body>"),
        ),
        "Public key (PEM)",
    ),
}
SCHEMES: dict[SignatureScheme, Scheme] = {
    scheme: Scheme(scheme, title, who, headers, key_label, _snippets(scheme))
    for scheme, (title, who, headers, key_label) in _DESCRIBED.items()
}
"""Every scheme, in the order the creation form offers them (the default first)."""


@dataclass(frozen=True)
class Preset:
    name: str
    slug: str
    """The form's value."""
    follows: str
    """Whose convention it is."""
    policy: Mapping[str, Any] | None
    """The API's ``retryPolicy``; None: the instance's."""

    @property
    def summary(self) -> str:
        """Its policy in words (empty for the instance's, which the page words itself)."""
        rules = RetryRules.parse(self.policy) if self.policy is not None else None
        return "; ".join(describe(rules))


PRESETS = (
    Preset("exponential (default)", "default", "this instance's", None),
    Preset(
        "5 steps then disable",
        "workestra",
        "Workestra",
        {"delays": [5, 30, 120, 600], "breakerThreshold": 5},
    ),
    Preset(
        "retry only 408/429/5xx",
        "gohighlevel",
        "GoHighLevel",
        {"retryOn": ["timeout", "connection", "408", "429", "5xx"]},
    ),
)
PRESET_BY_SLUG = {preset.slug: preset for preset in PRESETS}
CUSTOM = "custom"


def preset_of(rules: RetryRules | None) -> str:
    """The slug of the preset ``rules`` are, or ``custom``."""
    policy = rules.to_dict() if rules is not None else None
    if not policy:
        return PRESETS[0].slug
    for preset in PRESETS[1:]:
        if preset.policy is not None and RetryRules.parse(preset.policy).to_dict() == policy:
            return preset.slug
    return CUSTOM


def seconds(value: float) -> str:
    """``90`` -> ``1.5 min``: a delay as people say it."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} s"


def describe(rules: RetryRules | None) -> list[str]:
    """A subscription's own retry policy in words, one line per part it sets."""
    if rules is None:
        return []
    lines = []
    if rules.delays is not None:
        if rules.delays:
            steps = ", ".join(seconds(d) for d in rules.delays)
            lines.append(f"{len(rules.delays)} retries, after {steps}")
        else:
            lines.append("no retries")
    if rules.retry_on is not None:
        listed = [r.value for r in RetryOn if r in rules.retry_on]
        lines.append("retries on " + (", ".join(listed) if listed else "nothing"))
    if rules.breaker_threshold is not None:
        lines.append(f"disabled after {rules.breaker_threshold} failures in a row")
    return lines
