"""One service on each store the storage contract covers: memory, SQLite, PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tidings.config import Settings
from tidings.secretbox import SecretBox
from tidings.service import Tidings
from tidings.storage.memory import MemoryStore

STORES = ["memory", "sqlite", "postgresql"]


def settings_for(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Development settings on ``store`` (no database URL for the in-memory one)."""
    url = None
    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'tidings.db'}"
    elif store == "postgresql":
        from tests.support import postgres

        url = postgres.create_database(request.getfixturevalue("postgres_server"))
    key = Fernet.generate_key().decode()
    return Settings(database_url=url, data_dir=tmp_path, env="development", encryption_key=key)


@contextlib.asynccontextmanager
async def service_for(settings: Settings) -> AsyncIterator[Tidings]:
    """A migrated service on the settings' database, or on a MemoryStore without one."""
    service = (
        Tidings(settings, MemoryStore(), SecretBox([settings.encryption_key or ""]))
        if settings.database_url is None
        else Tidings.from_settings(settings)
    )
    await service.store.migrate()
    try:
        yield service
    finally:
        await service.close()
