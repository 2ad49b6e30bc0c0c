"""Pick the connector from the database URL."""

from __future__ import annotations

from tidings.storage.base import Store


class UnsupportedDatabase(ValueError):
    pass


def open_store(url: str) -> Store:
    if url.startswith("sqlite"):
        from tidings.storage.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("postgresql", "postgres")):
        from tidings.storage.postgres import PostgresStore

        return PostgresStore.from_url(url)
    raise UnsupportedDatabase(f"unsupported database URL {url.split(':', 1)[0]!r}")
