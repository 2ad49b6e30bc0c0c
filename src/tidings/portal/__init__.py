"""The web portal: server-rendered pages (Jinja2 + htmx) over the same core as the API.

Operators sign in with an admin API key; a tenant's customers come in through a signed,
expiring consumer link (see ``sessions.py``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from tidings.portal import routes_access, routes_events, routes_subscriptions
from tidings.portal.web import HERE, PortalError, SignInRequired, render, see_other


def install(app: FastAPI) -> None:
    """Serve the portal under /portal on ``app`` (whose ``state.tidings`` it uses)."""
    for module in (routes_access, routes_subscriptions, routes_events):
        app.include_router(module.router)
    app.mount("/portal/static", StaticFiles(directory=HERE / "static"), name="portal-static")

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, _: SignInRequired) -> Response:
        if request.method != "GET":
            return see_other("/portal/login")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return see_other("/portal/login?" + urlencode({"next": target}))

    @app.exception_handler(PortalError)
    async def portal_error(request: Request, exc: PortalError) -> Response:
        context = {"status": exc.status, "message": exc.message}
        return await render(request, None, "error.html", context, status_code=exc.status)
