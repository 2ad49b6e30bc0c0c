"""Opaque cursors: clients pass back what ``X-Paging-Cursor`` gave them."""

from __future__ import annotations

import base64

from fastapi import Response

from tidings.web.errors import ApiError

CURSOR_HEADER = "X-Paging-Cursor"


def encode_cursor(kind: str, key: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        found_kind, _, key = base64.urlsafe_b64decode(padded).decode().partition(":")
        if found_kind != kind:
            raise ValueError(kind)
        value = int(key)
        if value < 0:
            raise ValueError(value)
        return value
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", "cursor is not one this API issued") from exc


def set_next_cursor(response: Response, kind: str, next_key: int | None) -> None:
    if next_key is not None:
        response.headers[CURSOR_HEADER] = encode_cursor(kind, next_key)
