"""A throwaway PostgreSQL cluster from the Debian package, for the test session.

Set ``TIDINGS_TEST_POSTGRES_URL`` to use a running server instead. Each test gets a
fresh database on it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def _bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; CI and dev machines here are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def available() -> bool:
    return bool(os.environ.get("TIDINGS_TEST_POSTGRES_URL")) or _bindir() is not None


@contextlib.contextmanager
def cluster() -> Iterator[str]:
    """Yield a server URL (``postgresql://postgres@127.0.0.1:PORT``) for the session."""
    existing = os.environ.get("TIDINGS_TEST_POSTGRES_URL")
    if existing:
        yield existing.rstrip("/")
        return
    with own_cluster() as server:
        yield server.url


class Cluster:
    """A throwaway cluster this process controls: it can stop and start it again (on the
    same port), as an outage would."""

    def __init__(self, bindir: Path, options: str = "", *, crash_safe: bool = False) -> None:
        self._bindir = bindir
        self._options = options
        self._commit = "on" if crash_safe else "off"
        self.root = Path(tempfile.mkdtemp(prefix="tidings-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"

    def _ctl(self, *args: str, check: bool = True) -> None:
        command = _as_postgres([str(self._bindir / "pg_ctl"), "-D", str(self.data), *args])
        subprocess.run(command, check=check, capture_output=True, timeout=120)

    def init(self) -> None:
        initdb = [str(self._bindir / "initdb"), "-D", str(self.data), "-U", "postgres"]
        flags = ["--auth=trust", "-E", "UTF8", "--no-sync"]
        subprocess.run(_as_postgres(initdb + flags), check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit={self._commit} -c full_page_writes=off -c max_connections=400 "
            f"{self._options}"
        )
        self._ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash as far as clients can tell: connections drop at once."""
        self._ctl("-m", mode, "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def own_cluster(options: str = "", *, crash_safe: bool = False) -> Iterator[Cluster]:
    """A cluster of its own; ``options`` are more ``-c name=value`` server settings.

    Commits are acknowledged before their WAL is written (``synchronous_commit=off``:
    fast, and safe while the server is only ever stopped cleanly) unless ``crash_safe``:
    a test that stops the server with ``immediate`` (a crash) would otherwise lose the
    last few hundred milliseconds of acknowledged commits to PostgreSQL itself, and blame
    tidings. ``fsync`` stays off either way: the machine does not crash, only the server."""
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    server = Cluster(bindir, options, crash_safe=crash_safe)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


def create_database(server_url: str) -> str:
    name = "t_" + uuid.uuid4().hex[:16]
    subprocess.run(
        ["psql", f"{server_url}/postgres", "-q", "-c", f"CREATE DATABASE {name}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return f"{server_url}/{name}"
