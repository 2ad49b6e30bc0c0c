"""What the portal says about each dialect matches what tidings does (tidings.portal.dialects)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import pytest

from tidings.domain.retry import RetryRules
from tidings.domain.signatures import (
    SignatureScheme,
    generate_rsa_key,
    generate_secret,
    generate_signing_key,
    public_key_for,
    signature_headers,
)
from tidings.portal.dialects import PRESETS, SCHEMES, describe, preset_of, seconds

SECRETS: dict[SignatureScheme, Callable[[], str]] = {
    SignatureScheme.HMAC: generate_secret,
    SignatureScheme.ED25519: generate_signing_key,
    SignatureScheme.HMAC_BODY: generate_secret,
    SignatureScheme.RSA_SHA256: lambda: generate_rsa_key(2048),
}


def test_every_scheme_is_described_default_first() -> None:
    assert list(SCHEMES) == list(SignatureScheme)
    assert next(iter(SCHEMES)) is SignatureScheme.HMAC


@pytest.mark.parametrize("scheme", list(SignatureScheme))
def test_the_listed_headers_are_the_ones_a_delivery_sends(scheme: SignatureScheme) -> None:
    secret = SECRETS[scheme]()
    sent = signature_headers([secret], "evt_1", 1_700_000_000, b"{}", scheme)
    listed = [name for name, _ in SCHEMES[scheme].headers]
    assert sorted(listed) == sorted(sent)
    has_public_key = public_key_for(scheme, secret) is not None
    assert (SCHEMES[scheme].key_label is not None) is has_public_key


@pytest.mark.parametrize("scheme", list(SignatureScheme))
def test_each_scheme_has_its_own_snippet_files(scheme: SignatureScheme) -> None:
    folder = resources.files("tidings.portal") / "snippets"
    loaded = {s.slug: s.code for s in SCHEMES[scheme].snippets}
    assert loaded == {
        "node": (folder / f"{scheme.value}.node.js").read_text("utf-8"),
        "python": (folder / f"{scheme.value}.python.py").read_text("utf-8"),
    }
    assert all(code.strip() for code in loaded.values())


def test_presets_are_recognised_and_anything_else_is_custom() -> None:
    assert preset_of(None) == "default"
    assert preset_of(RetryRules()) == "default"  # a policy that sets nothing
    for preset in PRESETS[1:]:
        assert preset.policy is not None
        assert preset_of(RetryRules.parse(preset.policy)) == preset.slug
    assert preset_of(RetryRules.parse({"delays": [5, 30, 120, 600]})) == "custom"
    assert preset_of(RetryRules.parse({"retryOn": ["5xx"]})) == "custom"


def test_a_policy_in_words() -> None:
    rules = RetryRules.parse(
        {"delays": [5, 90, 7200, 86400], "retryOn": ["5xx", "timeout"], "breakerThreshold": 5}
    )
    assert describe(rules) == [
        "4 retries, after 5 s, 1.5 min, 2 h, 1 d",
        "retries on timeout, 5xx",
        "disabled after 5 failures in a row",
    ]
    assert describe(RetryRules.parse({"delays": [], "retryOn": []})) == [
        "no retries",
        "retries on nothing",
    ]
    assert describe(None) == []
    assert seconds(0.5) == "0.5 s"
