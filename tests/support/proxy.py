"""A real HTTP CONNECT proxy (tinyproxy, from Debian) for the egress tests, and a test CA
for a TLS receiver behind it.

The proxy listens on, and connects out from, 127.0.0.2: a receiver on 127.0.0.1 tells the
proxy's connections from direct ones by their source address. tinyproxy allows CONNECT
only to the ports listed with ``ConnectPort``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PROXY_ADDRESS = "127.0.0.2"


def available() -> bool:
    return shutil.which("tinyproxy") is not None


@dataclass
class Proxy:
    url: str
    log: Path

    def tunnels(self) -> list[str]:
        """The ``host:port`` of every CONNECT the proxy was asked for, in order."""
        return re.findall(r"Request \(file descriptor \d+\): CONNECT (\S+)", self.log.read_text())


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def tinyproxy(connect_ports: list[int]) -> Iterator[Proxy]:
    root = Path(tempfile.mkdtemp(prefix="tidings-proxy-"))
    os.chmod(root, 0o777)  # tinyproxy drops to nobody when started as root
    port = _free_port(PROXY_ADDRESS)
    log = root / "tinyproxy.log"
    config = root / "tinyproxy.conf"
    lines = [
        f"Port {port}",
        f"Listen {PROXY_ADDRESS}",
        f"Bind {PROXY_ADDRESS}",
        "Timeout 30",
        "MaxClients 100",
        "LogLevel Connect",
        f'LogFile "{log}"',
        "Allow 127.0.0.0/8",
        *(f"ConnectPort {p}" for p in connect_ports),
    ]
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        ["tinyproxy", "-d", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:  # nothing to await: the proxy is up when it accepts a connection
            with contextlib.suppress(OSError), socket.create_connection((PROXY_ADDRESS, port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tinyproxy did not start: {log.read_text()}")
            time.sleep(0.05)
        yield Proxy(f"http://{PROXY_ADDRESS}:{port}", log)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class LocalCA:
    """A CA and a server certificate it signed for ``name``."""

    ca_file: Path
    server: ssl.SSLContext


def local_ca(directory: Path, name: str) -> LocalCA:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tidings test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    chain = directory / "server.pem"
    chain.write_bytes(
        cert.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain)
    return LocalCA(ca_file, server)
