"""Database URLs as SQLAlchemy and asyncpg each need them."""

from __future__ import annotations

from tidings.storage.postgres import connection_urls


def test_libpq_multi_host_urls_become_sqlalchemy_host_parameters() -> None:
    url = "postgresql://u:p%40ss@h1:5432,h2:5433/db?target_session_attrs=read-write"
    engine_url, dsn = connection_urls(url)
    assert engine_url.drivername == "postgresql+asyncpg"
    assert engine_url.query["host"] == ("h1:5432", "h2:5433")
    assert engine_url.query["target_session_attrs"] == "read-write"
    assert (engine_url.username, engine_url.password, engine_url.database) == ("u", "p@ss", "db")
    assert dsn == url
    single_url, single_dsn = connection_urls("postgresql+asyncpg://u@h:5432/db")
    assert (single_url.host, single_url.port, single_dsn) == ("h", 5432, "postgresql://u@h:5432/db")
