"""A two-node PostgreSQL cluster under Patroni, with etcd, on 127.0.0.1: a primary that
can be killed and a synchronous replica that Patroni promotes in its place.

From the Debian packages ``patroni``, ``etcd-server`` and ``etcd-client``. What had to be
learnt (and is why this looks as it does): Patroni and PostgreSQL run as the ``postgres``
user; ``primary_start_timeout: 0`` makes a crashed primary fail over instead of being
restarted in place; ports come from below the ephemeral range (32768-60999), where an
outgoing connection could take one between choosing and binding it; killing Patroni alone
(rather than the postmaster) can leave two writable nodes, so the tests kill the postmaster.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.postgres import _bindir
from tests.support.processes import wait_or_kill

SUPERUSER_PASSWORD = "failover"


def available() -> bool:
    return all(shutil.which(tool) for tool in ("patroni", "etcd")) and _bindir() is not None


def _low_port() -> int:
    """A free port below the ephemeral range (see the module's docstring)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd]


@dataclass
class Node:
    name: str
    port: int
    api_port: int
    data: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def role_is(self, role: str) -> bool:
        """Patroni's REST API answers 200 on /primary, /replica, /sync only in that role."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/{role}", timeout=2):
                return True
        except OSError:
            return False

    def kill_postmaster(self) -> None:
        """A crash of the primary's server (not of Patroni): what a failover is for. The
        pid file outlives a crash: the pid is killed only if it is still this node's
        postgres, not a process that reused the number."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if str(self.data).encode() in command:
            os.kill(pid, signal.SIGKILL)


class PatroniCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.etcd_port = _low_port()
        self.nodes: list[Node] = []
        self._etcd: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._start_etcd()
        for role in ("primary", "sync"):
            node = self._start_node(f"node{len(self.nodes) + 1}")
            self.nodes.append(node)
            self.wait_for(functools.partial(node.role_is, role), 90, role)

    def url(self, database: str) -> str:
        hosts = ",".join(node.address for node in self.nodes)
        return (
            f"postgresql://postgres:{SUPERUSER_PASSWORD}@{hosts}/{database}"
            "?target_session_attrs=read-write"
        )

    def primary(self) -> Node:
        return next(node for node in self.nodes if node.role_is("primary"))

    @staticmethod
    def wait_for(check: object, seconds: float, what: str) -> None:
        """Poll ``check`` (Patroni offers nothing to await) until true, or fail after
        ``seconds``."""
        assert callable(check)
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Patroni: no {what} after {seconds} s")
            time.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            _stop(node.process, 30)
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                node.kill_postmaster()  # if Patroni left it running
        if self._etcd is not None:
            _stop(self._etcd, 10)

    def _start_etcd(self) -> None:
        peer = _low_port()
        client = f"http://127.0.0.1:{self.etcd_port}"
        argv = [
            "etcd",
            "--name=etcd0",
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=etcd0=http://127.0.0.1:{peer}",
        ]
        self._etcd = _spawn(argv, self.root / "etcd.log", as_postgres=False)
        self.wait_for(lambda: _http_ok(f"{client}/health"), 30, "etcd")

    def _start_node(self, name: str) -> Node:
        port, api_port = _low_port(), _low_port()
        data = self.root / name
        config = self.root / f"{name}.yml"
        config.write_text(json.dumps(self._config(name, port, api_port, data)))  # YAML ⊃ JSON
        if os.geteuid() == 0:
            shutil.chown(config, "postgres", "postgres")
        process = _spawn(["patroni", str(config)], self.root / f"{name}.log", as_postgres=True)
        return Node(name, port, api_port, data, process)

    def _config(self, name: str, port: int, api_port: int, data: Path) -> dict[str, object]:
        return {
            "scope": f"tidings-{self.etcd_port}",
            "name": name,
            "restapi": {
                "listen": f"127.0.0.1:{api_port}",
                "connect_address": f"127.0.0.1:{api_port}",
            },
            "etcd3": {"hosts": f"127.0.0.1:{self.etcd_port}"},
            "bootstrap": {
                "dcs": {
                    "ttl": 20,
                    "loop_wait": 1,
                    "retry_timeout": 5,
                    "primary_start_timeout": 0,
                    "synchronous_mode": True,
                    "postgresql": {"parameters": {"max_connections": 200}},
                },
                "initdb": [{"encoding": "UTF8"}, {"auth": "md5"}],
                "pg_hba": [
                    "local all all trust",
                    "host replication replicator 127.0.0.1/32 md5",
                    "host all all 127.0.0.1/32 md5",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{port}",
                "connect_address": f"127.0.0.1:{port}",
                "data_dir": str(data),
                "bin_dir": str(_bindir()),
                "pgpass": str(self.root / f"{name}.pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                    "replication": {"username": "replicator", "password": "replicate"},
                },
                "parameters": {"unix_socket_directories": str(self.root)},
            },
        }


def _spawn(argv: list[str], log: Path, *, as_postgres: bool) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        command = _as_postgres(argv) if as_postgres else argv
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)


def _stop(process: subprocess.Popen[bytes], seconds: float) -> None:
    if process.poll() is None:
        process.terminate()
        wait_or_kill(process, seconds)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def patroni_cluster() -> Iterator[PatroniCluster]:
    root = Path(tempfile.mkdtemp(prefix="tidings-patroni-"))
    os.chmod(root, 0o700)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = PatroniCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
