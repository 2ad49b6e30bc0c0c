"""The PostgreSQL servers a database URL names, and a connection to the first usable one.

A URL may name several servers in libpq's form
(``postgresql://u:p@h1:5432,h2:5432/db?target_session_attrs=read-write``): after a
failover the primary is another host. asyncpg can walk such a list itself, but under one
timeout for the whole list, so a first host that drops packets (powered off, partitioned)
would use it all up and the second would never be tried. Here each host gets its own
timeout, and every connection tidings opens (SQLAlchemy's pool, the hot-path pool, the
LISTEN connection) goes through :meth:`Servers.connect`. Only asyncpg parses the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tidings.storage.errors import is_outage

CONNECT_SECONDS = 10.0
"""How long one host may take to accept a connection and log it in."""


@dataclass(frozen=True)
class Servers:
    dsns: tuple[str, ...]
    """One single-host asyncpg DSN per server, in the URL's order."""

    @classmethod
    def from_url(cls, url: str) -> Servers:
        parts = urlsplit(url)
        userinfo, at, hosts = parts.netloc.rpartition("@")
        rest = parts.path + (f"?{parts.query}" if parts.query else "")
        return cls(tuple(f"postgresql://{userinfo}{at}{host}{rest}" for host in hosts.split(",")))

    async def connect(self, _dsn: None = None, **options: Any) -> asyncpg.Connection:
        """A connection to the first server that answers in time and matches the URL's
        ``target_session_attrs``; the last failure if none does. asyncpg's pool calls it
        with its (absent) DSN and options of its own, which go on to ``asyncpg.connect``."""
        failure: BaseException | None = None
        for dsn in self.dsns:
            try:
                return await asyncpg.connect(dsn, timeout=CONNECT_SECONDS, **options)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                failure = exc
        assert failure is not None
        raise failure
