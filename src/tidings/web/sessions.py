"""Who is looking at the portal: server-side sessions named by signed cookies, and
consumer links.

Two ways in. An operator signs in with an API key of scope ``admin``; a tenant's customer
follows a consumer link, a signed token that names the tenant, whether the holder may
change things, and when it expires. Either way the portal opens a session: a database
row (``SessionStore``) named by a random token, which the cookie carries signed. Every
request looks the row up, so signing out (the row goes) or revoking the operator's key
(its rows go) ends the session on every server at once, and a replayed cookie opens
nothing. Links themselves stay stateless: one works until it expires, however often it
is followed. Cookies and links are signed with a key derived from the encryption key, so
there is no second secret to keep, and rotating that key ends them all.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from tidings.secretbox import SecretBox
from tidings.service import Tidings
from tidings.storage import PortalSession

COOKIE = "tidings_portal"
SESSION_SECONDS = 12 * 3600
MAX_LINK_SECONDS = 30 * 86400


class Role(StrEnum):
    ADMIN = "admin"
    """An operator signed in with an admin API key: everything about the tenant."""
    CONSUMER = "consumer"
    """A tenant's customer with a consumer link: subscriptions and logs."""


@dataclass(frozen=True)
class Viewer:
    tenant_id: str
    role: Role
    can_manage: bool
    """May create, edit, test, disable and delete subscriptions and redeliver."""
    expires_at: float
    cookie: str
    """The signed cookie this viewer came with; CSRF tokens are bound to it."""
    session_id: str
    key_id: str | None = None
    """The admin key an operator signed in with (None for a consumer)."""

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def csrf_token(self, signer: PortalSigner) -> str:
        return signer.csrf_for(self.cookie)


@dataclass(frozen=True)
class ConsumerLink:
    token: str
    """The signed part of the link: ``/portal/c/<token>``."""
    expires_at: float
    can_manage: bool


@dataclass(frozen=True)
class LinkClaims:
    """What a valid, unexpired consumer link says."""

    tenant_id: str
    can_manage: bool
    expires_at: float


@dataclass(frozen=True)
class SessionClaims:
    """What a valid, unexpired cookie says: which session row to look up."""

    session_id: str
    expires_at: float


@dataclass(frozen=True)
class NewSession:
    """A session to store, and the cookie that names it."""

    session: PortalSession
    cookie: str


def session_id_of(token: str) -> str:
    """The row's id: the token's SHA-256 (256 random bits), so the table opens nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


class PortalSigner:
    def __init__(self, secretbox: SecretBox) -> None:
        key = secretbox.derive_key("tidings portal")
        self._sessions = URLSafeTimedSerializer(key, salt="portal-session")
        self._links = URLSafeTimedSerializer(key, salt="portal-consumer-link")
        self._csrf_key = hmac.new(key, b"csrf", hashlib.sha256).digest()

    def new_session(
        self,
        tenant_id: str,
        key_id: str | None,
        can_manage: bool,
        expires_at: float,
        now: float | None = None,
    ) -> NewSession:
        """A fresh session (``key_id`` for an operator's) and its cookie; the caller stores
        the session before handing out the cookie."""
        token = secrets.token_urlsafe(32)
        session = PortalSession(
            session_id_of(token),
            tenant_id,
            key_id,
            can_manage,
            int((now or time.time()) * 1000),
            int(expires_at * 1000),
        )
        return NewSession(session, self._sessions.dumps({"s": token, "x": expires_at}))

    def consumer_link(
        self, tenant_id: str, ttl_seconds: float, can_manage: bool, now: float | None = None
    ) -> ConsumerLink:
        if not 0 < ttl_seconds <= MAX_LINK_SECONDS:
            raise ValueError(f"a link lasts between 1 second and {MAX_LINK_SECONDS} seconds")
        expires = (now or time.time()) + ttl_seconds
        token = self._links.dumps({"t": tenant_id, "m": can_manage, "x": expires})
        return ConsumerLink(token, expires, can_manage)

    def read_link(self, link_token: str, now: float | None = None) -> LinkClaims | None:
        data = self._load(self._links, link_token, now)
        tenant_id = data.get("t") if data else None
        if data is None or not isinstance(tenant_id, str):
            return None
        return LinkClaims(tenant_id, bool(data.get("m")), float(data["x"]))

    def read_cookie(self, cookie: str, now: float | None = None) -> SessionClaims | None:
        data = self._load(self._sessions, cookie, now)
        token = data.get("s") if data else None
        if data is None or not isinstance(token, str):
            return None
        return SessionClaims(session_id_of(token), float(data["x"]))

    def csrf_for(self, cookie: str) -> str:
        return hmac.new(self._csrf_key, cookie.encode(), hashlib.sha256).hexdigest()[:40]

    def csrf_ok(self, cookie: str, token: str) -> bool:
        return hmac.compare_digest(
            self.csrf_for(cookie).encode(), token.encode("utf-8", "surrogatepass")
        )

    @staticmethod
    def _load(
        serializer: URLSafeTimedSerializer, token: str, now: float | None
    ) -> dict[str, Any] | None:
        """The signed dict, if the signature holds and its ``x`` (expiry) is still ahead."""
        try:
            data = serializer.loads(token)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        expires = data.get("x")
        if not isinstance(expires, (int, float)) or expires <= (now or time.time()):
            return None
        return data


def signer_of(request: Request) -> PortalSigner:
    signer: PortalSigner | None = getattr(request.app.state, "portal_signer", None)
    if signer is None:
        tidings: Tidings = request.app.state.tidings
        signer = request.app.state.portal_signer = PortalSigner(tidings.secretbox)
    return signer


def issue_consumer_link(
    request: Request, tenant_id: str, ttl_seconds: float, can_manage: bool
) -> tuple[str, ConsumerLink]:
    """A consumer link's full URL on this server, and the link (raises ValueError for a
    lifetime out of bounds)."""
    link = signer_of(request).consumer_link(tenant_id, ttl_seconds, can_manage)
    return str(request.url_for("consumer_link", token=link.token)), link
