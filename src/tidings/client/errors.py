"""Every non-2xx answer becomes a ``TidingsError`` carrying the API's error body."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

__all__ = ["NotFound", "RateLimited", "TidingsError", "Unauthorized", "error_from"]


class TidingsError(Exception):
    """The API said no: ``{"error": {"code", "message", "details"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class Unauthorized(TidingsError):
    """401: the API key is missing or unknown."""


class NotFound(TidingsError):
    """404: no such object for this key's tenant (other tenants' ids look the same)."""


class RateLimited(TidingsError):
    """429: too many requests; ``retry_after`` is the server's wait in seconds, if given."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, details)
        self.retry_after = retry_after


_BY_STATUS: dict[int, type[TidingsError]] = {401: Unauthorized, 404: NotFound}


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_body(response: httpx.Response) -> tuple[str, str, Any]:
    """(code, message, details) from the error shape, or a stand-in for a foreign body."""
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"]), error.get("details")
    except (ValueError, KeyError, TypeError):
        text = response.text[:500] or response.reason_phrase
        return "http_error", text, None


def error_from(response: httpx.Response) -> TidingsError:
    code, message, details = error_body(response)
    status = response.status_code
    if status == 429:
        wait = retry_after(response.headers.get("Retry-After"))
        return RateLimited(status, code, message, details, retry_after=wait)
    return _BY_STATUS.get(status, TidingsError)(status, code, message, details)
