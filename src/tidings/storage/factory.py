"""Pick the connector from the database URL."""

from __future__ import annotations

from tidings.storage.interfaces import Store


class UnsupportedDatabase(ValueError):
    pass


def open_store(url: str) -> Store:
    if url.startswith("sqlite"):
        from tidings.storage.sqlite import open_sqlite

        return open_sqlite(url)
    if url.startswith(("postgresql", "postgres")):
        from tidings.storage.postgres import open_postgres

        return open_postgres(url)
    raise UnsupportedDatabase(f"unsupported database URL {url.split(':', 1)[0]!r}")
