import time

import pytest
from cryptography.fernet import Fernet

from tidings.portal.sessions import MAX_LINK_SECONDS, SESSION_SECONDS, PortalSigner
from tidings.secretbox import SecretBox


@pytest.fixture
def signer() -> PortalSigner:
    return PortalSigner(SecretBox([Fernet.generate_key().decode()]))


def test_operator_cookie_carries_the_key_hash_until_it_expires(signer: PortalSigner) -> None:
    now = time.time()
    cookie = signer.operator_cookie("ab" * 32, now=now)
    claims = signer.read_cookie(cookie, now=now + 1)
    assert claims is not None
    assert (claims.key_hash, claims.tenant_id) == ("ab" * 32, None)
    assert signer.read_cookie(cookie, now=now + SESSION_SECONDS + 1) is None


def test_a_tampered_or_foreign_cookie_is_refused(signer: PortalSigner) -> None:
    cookie = signer.operator_cookie("ab" * 32)
    assert (
        signer.read_cookie(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]) is None
    )
    other = PortalSigner(SecretBox([Fernet.generate_key().decode()]))
    assert other.read_cookie(cookie) is None
    assert signer.read_cookie("not-a-cookie") is None


def test_consumer_link_becomes_a_session_for_its_tenant_only(signer: PortalSigner) -> None:
    now = time.time()
    token = signer.consumer_link("ten_1", 3600, can_manage=False, now=now).token
    cookie = signer.consumer_cookie(token, now=now + 10)
    assert cookie is not None
    claims = signer.read_cookie(cookie, now=now + 10)
    assert claims is not None
    assert (claims.tenant_id, claims.key_hash, claims.can_manage) == ("ten_1", None, False)
    assert claims.expires_at == pytest.approx(now + 3600)
    assert signer.read_cookie(cookie, now=now + 3601) is None


def test_an_expired_link_gives_no_session(signer: PortalSigner) -> None:
    now = time.time()
    token = signer.consumer_link("ten_1", 60, can_manage=True, now=now).token
    assert signer.consumer_cookie(token, now=now + 61) is None


def test_a_link_token_is_not_a_session_cookie(signer: PortalSigner) -> None:
    """Different salts: a link must go through /portal/c/ (which checks it) to be a session."""
    token = signer.consumer_link("ten_1", 60, can_manage=True).token
    assert signer.read_cookie(token) is None


@pytest.mark.parametrize("ttl", [0, -5, MAX_LINK_SECONDS + 1])
def test_link_lifetime_is_bounded(signer: PortalSigner, ttl: float) -> None:
    with pytest.raises(ValueError):
        signer.consumer_link("ten_1", ttl, can_manage=False)


def test_csrf_token_is_bound_to_the_session(signer: PortalSigner) -> None:
    a, b = signer.operator_cookie("aa" * 32), signer.operator_cookie("bb" * 32)
    assert signer.csrf_ok(a, signer.csrf_for(a))
    assert not signer.csrf_ok(a, signer.csrf_for(b))
    assert not signer.csrf_ok(a, "")
