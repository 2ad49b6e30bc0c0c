"""What every portal page shares: templates, the viewer dependency, CSRF, HTML errors."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from tidings.domain.deliveries import DisableReason
from tidings.domain.subscriptions import Subscription
from tidings.service import Tidings
from tidings.web.sessions import COOKIE, Role, Viewer, signer_of

HERE = Path(__file__).parent
MAX_ROW_ID = 2**63 - 1
PageKey = Annotated[int | None, Query(ge=0, le=MAX_ROW_ID)]
"""Page keys are row ids: larger numbers are not ids, and databases refuse them."""
templates = Jinja2Templates(directory=HERE / "templates")  # autoescapes .html


class SignInRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""


class PortalError(Exception):
    """Shown as an HTML error page with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def when(ms: int | None) -> str:
    if ms is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def ago(ms: int | None) -> str:
    if ms is None:
        return "never"
    seconds = max(0, int(time.time() - ms / 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


STATUS_LABELS = {
    None: ("active", "ok"),
    DisableReason.BREAKER: ("disabled by breaker", "bad"),
    DisableReason.GONE: ("disabled by 410 Gone", "bad"),
    DisableReason.MANUAL: ("disabled", "off"),
    DisableReason.UNVERIFIED: ("awaiting verification", "warn"),
}


def status_of(sub: Subscription) -> tuple[str, str]:
    """A subscription's status as (label, css class)."""
    if sub.enabled:
        return STATUS_LABELS[None]
    return STATUS_LABELS[sub.disabled_reason or DisableReason.MANUAL]


DELIVERY_CLASSES = {"succeeded": "ok", "failed": "bad", "pending": "warn"}


def status_class(delivery_status: str) -> str:
    return DELIVERY_CLASSES.get(delivery_status, "off")


templates.env.filters["when"] = when
templates.env.filters["status_class"] = status_class
templates.env.filters["ago"] = ago
templates.env.globals["status_of"] = status_of


def tidings_of(request: Request) -> Tidings:
    tidings: Tidings = request.app.state.tidings
    return tidings


async def viewer(request: Request) -> Viewer:
    """The signed-in viewer, or SignInRequired. The session's row is looked up on every
    request (no cache), so signing out or revoking the operator's key ends it at once."""
    cookie = request.cookies.get(COOKIE)
    claims = signer_of(request).read_cookie(cookie) if cookie else None
    if cookie is None or claims is None:
        raise SignInRequired
    now_ms = int(time.time() * 1000)
    session = await tidings_of(request).store.sessions.find_session(claims.session_id, now_ms)
    if session is None:
        raise SignInRequired
    return Viewer(
        session.tenant_id,
        Role.CONSUMER if session.key_id is None else Role.ADMIN,
        session.can_manage,
        session.expires_ms / 1000,
        cookie,
        session.id,
        session.key_id,
    )


async def start_session(
    request: Request,
    response: Response,
    tenant_id: str,
    key_id: str | None,
    can_manage: bool,
    expires_at: float,
) -> None:
    """Store a new session and set its cookie on ``response``."""
    new = signer_of(request).new_session(tenant_id, key_id, can_manage, expires_at)
    await tidings_of(request).store.sessions.open_session(new.session)
    response.set_cookie(
        COOKIE,
        new.cookie,
        max_age=max(1, int(expires_at - time.time())),
        path="/portal",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


async def manager(who: Viewer = Depends(viewer)) -> Viewer:
    if not who.can_manage:
        raise PortalError(403, "This link lets you look, not change anything.")
    return who


async def operator(who: Viewer = Depends(viewer)) -> Viewer:
    if not who.is_admin:
        raise PortalError(403, "Only operators signed in with an admin key may do this.")
    return who


SignedIn = Annotated[Viewer, Depends(viewer)]
Manager = Annotated[Viewer, Depends(manager)]
"""A viewer who may change things: not one on a read-only consumer link."""
Operator = Annotated[Viewer, Depends(operator)]
"""An operator signed in with an admin key."""


async def checked_form(request: Request, who: Viewer) -> FormData:
    """The posted form, if it carries this session's CSRF token."""
    form = await request.form()
    token = form.get("csrf")
    if not isinstance(token, str) or not signer_of(request).csrf_ok(who.cookie, token):
        raise PortalError(403, "This form has expired. Go back, reload the page and try again.")
    return form


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def parse_utc(text: str, name: str) -> int | None:
    """Epoch ms from an ``<input type=datetime-local>`` value, read as UTC."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PortalError(400, f"{name}: expected a date and time like 2026-11-23T14:05") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def recovery_since(form: FormData) -> int:
    """The form's required ``since``: failed deliveries from then on are queued again."""
    since = parse_utc(field(form, "since"), "since")
    if since is None:
        raise PortalError(400, "since: pick the time to recover failed deliveries from")
    return since


async def render(
    request: Request,
    who: Viewer | None,
    template: str,
    context: Mapping[str, Any],
    status_code: int = 200,
) -> Response:
    tenant_name = None
    if who is not None:
        tenant = await tidings_of(request).store.keys.get_tenant(who.tenant_id)
        tenant_name = tenant.name if tenant else who.tenant_id
    page = {
        "viewer": who,
        "tenant_name": tenant_name,
        "csrf": who.csrf_token(signer_of(request)) if who else "",
        **context,
    }
    response: Response = templates.TemplateResponse(
        request, template, page, status_code=status_code
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def safe_next(target: str) -> str:
    """Only a path inside the portal: never an open redirect."""
    ok = target.startswith("/portal/") and not target.startswith("//") and "\\" not in target
    return target if ok else "/portal/"
