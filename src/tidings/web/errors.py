"""Every error leaves as ``{"error": {"code", "message", "details"}}``; no stack traces."""

from __future__ import annotations

from typing import Any, TypeVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tidings.domain.events import InvalidEventType
from tidings.service import IdempotencyConflict, Invalid, NotFound
from tidings.storage.errors import RETRY_AFTER_SECONDS, StorageUnavailable

log = structlog.get_logger("tidings.api")


class ApiError(Exception):
    """Raise it anywhere under a route: the answer is ``status`` with the JSON error shape
    ``{"error": {"code", "message", "details"}}`` (an HTML page on portal pages)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers

    def response(self) -> JSONResponse:
        """The answer as JSON (what the API sends; the portal renders a page instead)."""
        error = {"code": self.code, "message": self.message, "details": self.details}
        return JSONResponse({"error": error}, status_code=self.status, headers=self.headers)


def not_found(what: str) -> ApiError:
    """The 404 for an id that is unknown, or belongs to another tenant (the same answer)."""
    return ApiError(404, "not_found", f"{what} not found")


T = TypeVar("T")


def or_not_found(found: T | None, what: str) -> T:
    """``found``, or the 404 for ``what`` when the lookup found nothing."""
    if found is None:
        raise not_found(what)
    return found


TRANSLATED: tuple[type[Exception], ...] = (
    Invalid,
    InvalidEventType,
    NotFound,
    IdempotencyConflict,
)
"""The core's exceptions that are answers, not bugs; :func:`as_api_error` says which."""


def as_api_error(exc: Exception) -> ApiError:
    """The one place the core's exceptions become HTTP answers (JSON on the API, an HTML
    page on the portal), so no route catches them."""
    if isinstance(exc, Invalid):
        details = [{"field": exc.field, "message": str(exc), **exc.details}]
        return ApiError(exc.status, exc.code, str(exc), details)
    if isinstance(exc, InvalidEventType):  # an event type given as ``type`` (emit, filters)
        return ApiError(422, "invalid_event_type", str(exc), [{"field": "type"}])
    if isinstance(exc, NotFound):
        return not_found(exc.what)
    if isinstance(exc, IdempotencyConflict):
        return ApiError(409, "idempotency_conflict", str(exc))
    raise TypeError(f"{type(exc).__name__} is not translated")


ANSWERED: tuple[type[Exception], ...] = (*TRANSLATED, StorageUnavailable)
"""What a route may raise that is an answer: the core's refusals and a database outage."""


def error_response(exc: Exception, path: str | None = None) -> JSONResponse:
    """The JSON answer for one of ``ANSWERED``: the app's handlers use it, and so does
    any layer that answers outside them (the emit fast path)."""
    if isinstance(exc, StorageUnavailable):
        log.warning("storage_unavailable", path=path, error=str(exc)[:200])
        retry = str(RETRY_AFTER_SECONDS)
        message = "the database is unavailable; retry later"
        return ApiError(503, "unavailable", message, None, {"Retry-After": retry}).response()
    return as_api_error(exc).response()


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "")}
        for err in exc.errors()
    ]


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path: Starlette's 405 names only the first
    route's, and one path here (e.g. /api/v1/events) is served by several routes."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "__none__"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    async def answered(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc, request.url.path)

    for exc_class in ANSWERED:
        app.add_exception_handler(exc_class, answered)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return ApiError(400, "invalid_json", "request body is not valid JSON").response()
        if any(
            err.get("type") == "missing" and tuple(err.get("loc", ())) == ("body",)
            for err in errors
        ):
            return ApiError(400, "missing_body", "request body is required").response()
        return ApiError(
            422, "validation_error", "request is invalid", _validation_details(exc)
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            headers = {"Allow": ", ".join(allowed_methods(request))}
        return ApiError(exc.status_code, code, str(exc.detail), None, headers).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled_error", path=request.url.path, error_type=type(exc).__name__)
        return ApiError(500, "internal_error", "internal server error").response()
