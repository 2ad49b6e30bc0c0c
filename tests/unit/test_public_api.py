"""The embedding API is exactly ``tidings.__all__``, each name resolves, and importing
``tidings`` alone does not load the server (receivers and clients import it too)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tidings

EMBEDDING_API = {
    "ApiError",
    "ApiKey",
    "App",
    "EventType",
    "Outbox",
    "Settings",
    "StoredEvent",
    "Tidings",
    "__version__",
    "create_app",
    "event_type",
    "get_tidings",
    "new_id",
    "not_found",
    "require",
}


def test_all_is_the_embedding_api() -> None:
    assert set(tidings.__all__) == EMBEDDING_API
    assert sorted(tidings.__all__) == tidings.__all__


@pytest.mark.parametrize("name", sorted(EMBEDDING_API))
def test_every_public_name_resolves_and_is_documented(name: str) -> None:
    value = getattr(tidings, name)
    assert value is not None
    assert name in dir(tidings)
    if callable(value):
        assert value.__doc__, f"tidings.{name} needs a docstring"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Store'"):
        _ = tidings.Store


def test_importing_tidings_loads_no_server_code() -> None:
    probe = (
        "import sys, tidings, tidings.receiver; "
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'aiohttp') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
