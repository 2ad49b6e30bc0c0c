"""The core's exceptions become HTTP answers in one table (tidings.web.errors)."""

from __future__ import annotations

import pytest

from tidings.domain.events import InvalidEventType
from tidings.service import IdempotencyConflict, Invalid, NotFound
from tidings.web.errors import TRANSLATED, as_api_error


@pytest.mark.parametrize(
    ("exc", "status", "code", "details"),
    [
        (Invalid("url", "no"), 422, "validation_error", [{"field": "url", "message": "no"}]),
        (InvalidEventType("bad"), 422, "invalid_event_type", [{"field": "type"}]),
        (NotFound("subscription"), 404, "not_found", None),
        (IdempotencyConflict("reused"), 409, "idempotency_conflict", None),
    ],
)
def test_each_translated_exception_has_its_answer(
    exc: Exception, status: int, code: str, details: object
) -> None:
    error = as_api_error(exc)
    assert (error.status, error.code, error.details) == (status, code, details)
    assert isinstance(exc, TRANSLATED)


def test_a_bug_is_not_translated() -> None:
    with pytest.raises(TypeError):
        as_api_error(KeyError("x"))
