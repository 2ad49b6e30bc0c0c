"""Who is looking at the portal: signed session cookies and consumer links.

Two ways in. An operator signs in with an API key of scope ``admin``; the cookie holds
the key's hash (never the key), and every request looks the key up again, so a revoked
key ends its sessions. A tenant's customer follows a consumer link: a signed token that
names the tenant, whether the holder may change things, and when it expires. Both are
signed with a key derived from the encryption key, so there is no second secret to keep.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from enum import StrEnum

from itsdangerous import BadSignature, URLSafeTimedSerializer

from tidings.secretbox import SecretBox

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
class SessionClaims:
    """What a valid cookie says; ``key_hash`` for operators, ``tenant_id`` for consumers."""

    key_hash: str | None
    tenant_id: str | None
    can_manage: bool
    expires_at: float


class PortalSigner:
    def __init__(self, secretbox: SecretBox) -> None:
        key = secretbox.derive_key("tidings portal")
        self._sessions = URLSafeTimedSerializer(key, salt="portal-session")
        self._links = URLSafeTimedSerializer(key, salt="portal-consumer-link")
        self._csrf_key = hmac.new(key, b"csrf", hashlib.sha256).digest()

    def operator_cookie(self, key_hash: str, now: float | None = None) -> str:
        expires = (now or time.time()) + SESSION_SECONDS
        return self._sessions.dumps({"k": key_hash, "x": expires})

    def consumer_link(
        self, tenant_id: str, ttl_seconds: float, can_manage: bool, now: float | None = None
    ) -> ConsumerLink:
        if not 0 < ttl_seconds <= MAX_LINK_SECONDS:
            raise ValueError(f"a link lasts between 1 second and {MAX_LINK_SECONDS} seconds")
        expires = (now or time.time()) + ttl_seconds
        token = self._links.dumps({"t": tenant_id, "m": can_manage, "x": expires})
        return ConsumerLink(token, expires, can_manage)

    def consumer_cookie(self, link_token: str, now: float | None = None) -> str | None:
        """The session cookie a valid, unexpired link turns into (same tenant and expiry)."""
        claims = self._load(self._links, link_token, now)
        if claims is None or claims.tenant_id is None:
            return None
        return self._sessions.dumps(
            {"t": claims.tenant_id, "m": claims.can_manage, "x": claims.expires_at}
        )

    def read_cookie(self, cookie: str, now: float | None = None) -> SessionClaims | None:
        return self._load(self._sessions, cookie, now)

    def csrf_for(self, cookie: str) -> str:
        return hmac.new(self._csrf_key, cookie.encode(), hashlib.sha256).hexdigest()[:40]

    def csrf_ok(self, cookie: str, token: str) -> bool:
        return hmac.compare_digest(
            self.csrf_for(cookie).encode(), token.encode("utf-8", "surrogatepass")
        )

    @staticmethod
    def _load(
        serializer: URLSafeTimedSerializer, token: str, now: float | None
    ) -> SessionClaims | None:
        try:
            data = serializer.loads(token)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        expires = data.get("x")
        if not isinstance(expires, (int, float)) or expires <= (now or time.time()):
            return None
        key_hash, tenant_id = data.get("k"), data.get("t")
        if not (isinstance(key_hash, str) or isinstance(tenant_id, str)):
            return None
        return SessionClaims(
            key_hash if isinstance(key_hash, str) else None,
            tenant_id if isinstance(tenant_id, str) else None,
            bool(data.get("m")),
            float(expires),
        )
