"""A database URL's servers, one single-host DSN each, as asyncpg reads them."""

from __future__ import annotations

import pytest

from tidings.storage.servers import Servers


@pytest.mark.parametrize(
    ("url", "dsns"),
    [
        (
            "postgresql://u:p%40ss@h1:5432,h2:5433/db?target_session_attrs=read-write",
            (
                "postgresql://u:p%40ss@h1:5432/db?target_session_attrs=read-write",
                "postgresql://u:p%40ss@h2:5433/db?target_session_attrs=read-write",
            ),
        ),
        ("postgresql://h1,h2/db", ("postgresql://h1/db", "postgresql://h2/db")),
        (
            "postgresql://u@[::1]:5432,[::2]:5433/db",
            ("postgresql://u@[::1]:5432/db", "postgresql://u@[::2]:5433/db"),
        ),
        ("postgresql+asyncpg://u@h:5432/db", ("postgresql://u@h:5432/db",)),
        ("postgresql:///db?host=%2Ftmp", ("postgresql:///db?host=%2Ftmp",)),
    ],
    ids=["ports-and-password", "default-ports", "ipv6", "driver-name", "unix-socket"],
)
def test_each_server_gets_its_own_dsn(url: str, dsns: tuple[str, ...]) -> None:
    assert Servers.from_url(url).dsns == dsns
