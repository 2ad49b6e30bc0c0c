import time

import pytest
from cryptography.fernet import Fernet

from tidings.secretbox import SecretBox
from tidings.web.sessions import (
    MAX_LINK_SECONDS,
    SESSION_SECONDS,
    PortalSigner,
    session_id_of,
)


@pytest.fixture
def signer() -> PortalSigner:
    return PortalSigner(SecretBox([Fernet.generate_key().decode()]))


def test_a_session_cookie_names_its_row_until_it_expires(signer: PortalSigner) -> None:
    now = time.time()
    new = signer.new_session("ten_1", "key_1", True, now + SESSION_SECONDS, now=now)
    assert (new.session.tenant_id, new.session.key_id, new.session.can_manage) == (
        "ten_1",
        "key_1",
        True,
    )
    assert new.session.expires_ms == int((now + SESSION_SECONDS) * 1000)
    claims = signer.read_cookie(new.cookie, now=now + 1)
    assert claims is not None
    assert claims.session_id == new.session.id
    assert signer.read_cookie(new.cookie, now=now + SESSION_SECONDS + 1) is None


def test_the_row_id_is_a_hash_the_cookie_alone_reveals(signer: PortalSigner) -> None:
    """The table holds the token's hash: a copy of it names no cookie."""
    new = signer.new_session("ten_1", None, False, time.time() + 60)
    assert len(new.session.id) == 64
    assert new.session.id not in new.cookie
    other = signer.new_session("ten_1", None, False, time.time() + 60)
    assert other.session.id != new.session.id
    assert session_id_of("x") != session_id_of("y")


def test_a_tampered_or_foreign_cookie_is_refused(signer: PortalSigner) -> None:
    cookie = signer.new_session("ten_1", "key_1", True, time.time() + 60).cookie
    assert (
        signer.read_cookie(cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]) is None
    )
    other = PortalSigner(SecretBox([Fernet.generate_key().decode()]))
    assert other.read_cookie(cookie) is None
    assert signer.read_cookie("not-a-cookie") is None


def test_consumer_link_names_its_tenant_rights_and_expiry(signer: PortalSigner) -> None:
    now = time.time()
    token = signer.consumer_link("ten_1", 3600, can_manage=False, now=now).token
    claims = signer.read_link(token, now=now + 10)
    assert claims is not None
    assert (claims.tenant_id, claims.can_manage) == ("ten_1", False)
    assert claims.expires_at == pytest.approx(now + 3600)
    assert signer.read_link(token, now=now + 3601) is None


def test_an_expired_link_gives_no_session(signer: PortalSigner) -> None:
    now = time.time()
    token = signer.consumer_link("ten_1", 60, can_manage=True, now=now).token
    assert signer.read_link(token, now=now + 61) is None


def test_a_link_token_is_not_a_session_cookie(signer: PortalSigner) -> None:
    """Different salts: a link must go through /portal/c/ (which checks it) to be a session,
    and a session cookie is not a link."""
    token = signer.consumer_link("ten_1", 60, can_manage=True).token
    assert signer.read_cookie(token) is None
    cookie = signer.new_session("ten_1", None, True, time.time() + 60).cookie
    assert signer.read_link(cookie) is None


@pytest.mark.parametrize("ttl", [0, -5, MAX_LINK_SECONDS + 1])
def test_link_lifetime_is_bounded(signer: PortalSigner, ttl: float) -> None:
    with pytest.raises(ValueError):
        signer.consumer_link("ten_1", ttl, can_manage=False)


def test_csrf_token_is_bound_to_the_session(signer: PortalSigner) -> None:
    expires = time.time() + 60
    a = signer.new_session("ten_1", "key_1", True, expires).cookie
    b = signer.new_session("ten_1", "key_1", True, expires).cookie
    assert signer.csrf_ok(a, signer.csrf_for(a))
    assert not signer.csrf_ok(a, signer.csrf_for(b))
    assert not signer.csrf_ok(a, "")
