"""The web portal: server-rendered pages (Jinja2 + htmx) over the same core as the API.

Operators sign in with an admin API key; a tenant's customers come in through a signed,
expiring consumer link (see ``sessions.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar, cast
from urllib.parse import urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from tidings.portal import routes_access, routes_events, routes_keys, routes_subscriptions
from tidings.portal.web import HERE, PortalError, SignInRequired, render, safe_next, see_other
from tidings.storage.errors import StorageUnavailable
from tidings.web.errors import TRANSLATED, ApiError, as_api_error

E = TypeVar("E", bound=Exception)


def install(app: FastAPI) -> None:
    """Serve the portal under /portal on ``app`` (whose ``state.tidings`` it uses)."""
    for module in (routes_access, routes_subscriptions, routes_events, routes_keys):
        app.include_router(module.router)
    app.mount("/portal/static", StaticFiles(directory=HERE / "static"), name="portal-static")

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, _: SignInRequired) -> Response:
        if request.headers.get("HX-Request") == "true":
            return _htmx_sign_in(request)
        if request.method != "GET":
            return see_other("/portal/login")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return see_other("/portal/login?" + urlencode({"next": target}))

    @app.exception_handler(PortalError)
    async def portal_error(request: Request, exc: PortalError) -> Response:
        return await error_page(request, exc.status, exc.message)

    _html_on_portal_pages(app, RequestValidationError, _invalid_request)
    _html_on_portal_pages(app, ApiError, lambda exc: (exc.status, exc.message))
    for exc_class in TRANSLATED:
        _html_on_portal_pages(app, exc_class, _status_and_message)
    _html_on_portal_pages(app, StarletteHTTPException, _http_error)
    _html_on_portal_pages(app, StorageUnavailable, _unavailable)


def _htmx_sign_in(request: Request) -> Response:
    """htmx would follow a redirect and swap the sign-in page into a fragment (the chart,
    a test result); a 401 swaps nothing, and ``HX-Redirect`` sends the whole page to
    sign in, coming back to the page it was on."""
    current = urlsplit(request.headers.get("HX-Current-URL", ""))
    here = safe_next(current.path + (f"?{current.query}" if current.query else ""))
    login = "/portal/login?" + urlencode({"next": here})
    return Response(status_code=401, headers={"HX-Redirect": login, "Cache-Control": "no-store"})


async def error_page(request: Request, status: int, message: str) -> Response:
    context = {"status": status, "message": message}
    return await render(request, None, "error.html", context, status_code=status)


def _html_on_portal_pages(
    app: FastAPI, exc_class: type[E], describe: Callable[[E], tuple[int, str]]
) -> None:
    """Errors the API answers in JSON become an HTML page when a portal page caused them
    (a hand-edited query string, an unknown page); the API keeps its JSON shape."""
    api_handler = app.exception_handlers[exc_class]

    async def handler(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if not path.startswith("/portal/") or path.startswith("/portal/static/"):
            answer = api_handler(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        status, message = describe(cast(E, exc))
        return await error_page(request, status, message)

    app.add_exception_handler(exc_class, handler)


def _invalid_request(exc: RequestValidationError) -> tuple[int, str]:
    problems = "; ".join(
        f"{error['loc'][-1]}: {error['msg']}" for error in exc.errors() if error.get("loc")
    )
    return 422, f"This page cannot use that address: {problems or 'invalid request'}."


def _status_and_message(exc: Exception) -> tuple[int, str]:
    error = as_api_error(exc)
    return error.status, error.message


def _unavailable(_: StorageUnavailable) -> tuple[int, str]:
    return 503, "The database is unavailable just now. Try again in a few seconds."


def _http_error(exc: StarletteHTTPException) -> tuple[int, str]:
    if exc.status_code == 404:
        return 404, "No such page."
    return exc.status_code, str(exc.detail)
