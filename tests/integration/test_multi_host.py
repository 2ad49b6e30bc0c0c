"""A multi-host ``TIDINGS_DATABASE_URL`` (libpq's form): every connection tidings opens
(SQLAlchemy's engine, the hot-path pool, the LISTEN connection) skips a server that is
down, one that never answers, and one that is read-only, as after a failover the old
primary is."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import eventually
from tests.support import postgres
from tests.support.processes import free_port
from tests.support.receiver import Receiver
from tidings.config import Settings
from tidings.service import Tidings
from tidings.storage import servers
from tidings.storage.postgres import PostgresDatabase

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]


def psql(url: str, sql: str) -> str:
    done = subprocess.run(
        ["psql", url, "-qtA", "-c", sql], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip()


@pytest.fixture
def standby() -> Iterator[str]:
    """A second server: its URL."""
    with postgres.own_cluster() as server:
        yield server.url


def make_read_only(server_url: str, database: str) -> None:
    """The server keeps answering but takes no writes, as a replica (or an old primary
    after a failover) does; ``database`` exists there too, as on a replica."""
    psql(f"{server_url}/postgres", f"CREATE DATABASE {database}")
    psql(f"{server_url}/postgres", "ALTER SYSTEM SET default_transaction_read_only = on")
    psql(f"{server_url}/postgres", "SELECT pg_reload_conf()")


async def listening(tidings: Tidings) -> bool:
    db = tidings.store.db  # type: ignore[attr-defined]
    return isinstance(db, PostgresDatabase) and db._listener is not None


@pytest.fixture
def silent() -> Iterator[str]:
    """A host that takes the TCP connection and then says nothing (a hung server, or one
    whose answers are dropped): its ``host:port``."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        yield f"127.0.0.1:{listening.getsockname()[1]}"


async def test_every_connection_finds_the_writable_server(
    postgres_server: str,
    standby: str,
    silent: str,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Down (refused), silent (each connection times out alone), read-only, writable."""
    monkeypatch.setattr(servers, "CONNECT_SECONDS", 1.0)
    writable = postgres.create_database(postgres_server)
    name = writable.rsplit("/", 1)[1]
    make_read_only(standby, name)
    down = f"127.0.0.1:{free_port()}"
    hosts = ",".join([down, silent, standby.split("@")[1], postgres_server.split("@")[1]])
    url = f"postgresql://postgres@{hosts}/{name}?target_session_attrs=read-write"
    key = Fernet.generate_key().decode()
    settings = Settings(
        data_dir=tmp_path,
        env="development",
        database_url=url,
        encryption_key=key,
        dispatcher_poll_interval=60,  # so only a NOTIFY, through LISTEN, wakes it in time
    )
    worker, api = Tidings.from_settings(settings), Tidings.from_settings(settings)
    try:
        await api.store.migrate()
        api_key, _ = await api.create_api_key("acme", ["admin"])
        await api.create_subscription(api_key.tenant_id, receiver.url("/h"), ["client.*"])
        stop = asyncio.Event()
        delivering = asyncio.create_task(worker.run_dispatcher(stop))
        try:
            await eventually(lambda: listening(worker))
            event, _ = await api.emit(api_key.tenant_id, "client.created", {"n": 1})
            received = await receiver.wait_count("/h", 1, timeout=20)
        finally:
            stop.set()
            await delivering
    finally:
        await worker.close()
        await api.close()
    assert received[0].headers["X-Webhook-Id"] == event.id
    assert psql(writable, "SELECT count(*) FROM events") == "1"
    tables_on_standby = psql(
        f"{standby}/{name}", "SELECT count(*) FROM pg_tables WHERE tablename = 'events'"
    )
    assert tables_on_standby == "0"


async def test_a_hot_connection_an_error_went_through_is_not_reused(postgres_server: str) -> None:
    """The hot pool's reset on release does nothing (no round trip per emit, claim and
    record), so a connection an error went through (an outage can leave one
    mid-protocol) is closed instead of going back: the next acquire gets a new one."""
    db = PostgresDatabase.from_url(postgres.create_database(postgres_server))
    try:

        async def backend() -> int:
            async with db.hot_connection() as conn:
                return int(conn.get_server_pid())

        first = await backend()
        assert await backend() == first, "a clean release keeps the connection"
        with pytest.raises(RuntimeError):
            async with db.hot_connection():
                raise RuntimeError("as an outage would, mid-statement")
        assert await backend() != first
    finally:
        await db.close()
