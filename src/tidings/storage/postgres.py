"""The PostgreSQL connector: many API processes and workers share one database.

Claims use ``FOR UPDATE SKIP LOCKED`` (rendered by the shared claim query).
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tidings.storage.sql import SQLStore


class PostgresStore(SQLStore):
    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        parsed = make_url(url).set(drivername="postgresql+asyncpg")
        engine = create_async_engine(parsed, pool_size=10, max_overflow=10)
        return cls(engine)
