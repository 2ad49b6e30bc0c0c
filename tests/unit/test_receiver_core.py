"""tidings.receiver without a framework: Ed25519 in verify(), the Event, the dedup stores."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.unit.test_receiver_support import envelope, expected_event
from tidings.domain import signatures as domain_signatures
from tidings.domain.signatures import generate_secret, sign_standard_v1
from tidings.receiver import (
    Deduplicator,
    DedupStore,
    Event,
    InvalidEvent,
    MemoryDedupStore,
    RedisDedupStore,
    SQLiteDedupStore,
    WebhookVerificationError,
    verify,
)

TS = 1_700_000_000
BODY = b'{"a":1}'


# --- importable with the standard library only -------------------------------------------


def test_receiver_imports_no_third_party_module() -> None:
    third_party = "fastapi starlette sqlalchemy aiohttp pydantic cryptography flask django redis"
    code = (
        "import sys, tidings.receiver\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {third_party.split()!r})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- Ed25519 (Standard Webhooks v1a) ------------------------------------------------------


def ed25519_pair() -> tuple[Ed25519PrivateKey, str]:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, "whpk_" + base64.b64encode(raw).decode()


def v1a(private: Ed25519PrivateKey, msg_id: str, ts: int, body: bytes) -> str:
    signature = private.sign(f"{msg_id}.{ts}.".encode() + body)
    return "v1a," + base64.b64encode(signature).decode()


def standard_headers(msg_id: str, signature: str, ts: int = TS) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def test_v1a_signature_verifies_with_the_public_key() -> None:
    private, public = ed25519_pair()
    headers = standard_headers("msg_1", v1a(private, "msg_1", TS, BODY))
    verify(public, headers, BODY, now=TS)
    with pytest.raises(WebhookVerificationError):
        verify(public, headers, b'{"a":2}', now=TS)
    with pytest.raises(WebhookVerificationError):
        verify(public, {**headers, "webhook-id": "msg_2"}, BODY, now=TS)
    with pytest.raises(WebhookVerificationError):
        verify(public, headers, BODY, now=TS + 301)
    with pytest.raises(WebhookVerificationError):
        verify(ed25519_pair()[1], headers, BODY, now=TS)


def test_v1a_and_v1_side_by_side_during_a_migration() -> None:
    private, public = ed25519_pair()
    secret = generate_secret()
    both = f"{sign_standard_v1(secret, 'm', TS, BODY)} {v1a(private, 'm', TS, BODY)}"
    for accepted in ([public], [secret], [public, secret], [secret, public]):
        verify(accepted, standard_headers("m", both), BODY, now=TS)
    only_v1a = standard_headers("m", v1a(private, "m", TS, BODY))
    verify([secret, public], only_v1a, BODY, now=TS)
    with pytest.raises(WebhookVerificationError):
        verify(secret, only_v1a, BODY, now=TS)


def test_a_public_key_is_never_used_as_an_hmac_key() -> None:
    """Anyone may know a public key: an HMAC keyed by it must not pass, in either scheme."""
    _, public = ed25519_pair()
    forged_legacy = {
        "X-Webhook-Timestamp": str(TS),
        "X-Webhook-Signature": "sha256="
        + hmac.new(public.encode(), f"{TS}.".encode() + BODY, hashlib.sha256).hexdigest(),
    }
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(public, forged_legacy, BODY, now=TS)
    key = base64.b64decode(public.removeprefix("whpk_"))
    digest = hmac.digest(key, f"m.{TS}.".encode() + BODY, hashlib.sha256)
    forged_v1 = standard_headers("m", "v1," + base64.b64encode(digest).decode())
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(public, forged_v1, BODY, now=TS)


@pytest.mark.parametrize(
    "bad_key", ["whpk_", "whpk_!!!", "whpk_" + base64.b64encode(b"k" * 31).decode()]
)
def test_malformed_public_key_is_a_verification_error(bad_key: str) -> None:
    private, _ = ed25519_pair()
    headers = standard_headers("m", v1a(private, "m", TS, BODY))
    with pytest.raises(WebhookVerificationError, match="public key"):
        verify(bad_key, headers, BODY, now=TS)


@pytest.mark.parametrize("garbage", ["v1a,", "v1a,!!!", "v1a," + "A" * 88, "v1a,AAAA"])
def test_garbage_v1a_values_are_rejected(garbage: str) -> None:
    _, public = ed25519_pair()
    with pytest.raises(WebhookVerificationError):
        verify(public, standard_headers("m", garbage), BODY, now=TS)


@pytest.mark.skipif(
    not hasattr(domain_signatures, "sign_standard_v1a"), reason="server side has no v1a yet"
)
def test_v1a_interoperates_with_the_server_signer() -> None:
    key = "whsk_" + base64.b64encode(b"s" * 32).decode()
    public = domain_signatures.public_key_of(key)
    signature = domain_signatures.sign_standard_v1a(key, "m", TS, BODY)
    verify(public, standard_headers("m", signature), BODY, now=TS)


# --- the Event ----------------------------------------------------------------------------


def test_event_parses_the_delivered_envelope() -> None:
    assert Event.from_json(envelope("evt_9")) == expected_event("evt_9")


def test_event_metadata_is_optional_and_unknown_fields_are_ignored() -> None:
    event = Event.from_dict(
        {
            "id": "evt_1",
            "type": "t",
            "createdUtc": "2024-01-02T03:04:05Z",
            "companyId": "c",
            "payload": {},
            "future": 1,
        }
    )
    assert event.metadata == {} and event.created_utc.isoformat() == "2024-01-02T03:04:05+00:00"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff",
        b"[]",
        b'{"type":"t","createdUtc":"2024-01-01T00:00:00Z","companyId":"c","payload":{}}',
        b'{"id":1,"type":"t","createdUtc":"2024-01-01T00:00:00Z","companyId":"c","payload":{}}',
        b'{"id":"e","type":"t","createdUtc":"yesterday","companyId":"c","payload":{}}',
        b'{"id":"e","type":"t","createdUtc":"2024-01-01T00:00:00Z","companyId":"c","payload":[]}',
    ],
)
def test_event_rejects_what_is_not_an_envelope(body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        Event.from_json(body)


# --- dedup stores -------------------------------------------------------------------------


def concurrent_first_sightings(store: DedupStore, ids: list[str]) -> list[str]:
    """Ids for which seen_before() answered False, with 8 threads racing over each id."""
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: (i, store.seen_before(i)), ids * 8))
    return sorted(i for i, seen in results if not seen)


def assert_store_contract(store: DedupStore) -> None:
    assert isinstance(store, DedupStore)
    assert store.seen_before("evt_a") is False
    assert store.seen_before("evt_a") is True
    assert store.seen_before("evt_b") is False
    ids = [f"evt_{n}" for n in range(50)]
    assert concurrent_first_sightings(store, ids) == sorted(ids)


def test_memory_store_contract_capacity_and_old_name() -> None:
    assert_store_contract(MemoryDedupStore())
    assert Deduplicator is MemoryDedupStore
    dedup = Deduplicator(capacity=2)
    assert dedup.first_time("a") and not dedup.first_time("a")
    assert dedup.first_time("b") and dedup.first_time("c")
    assert dedup.first_time("a"), "a was evicted by capacity"


def test_sqlite_store_contract_and_sharing_between_connections(tmp_path: Path) -> None:
    path = tmp_path / "seen.db"
    assert_store_contract(SQLiteDedupStore(path))
    other_process_view = SQLiteDedupStore(path)
    assert other_process_view.seen_before("evt_a") is True
    assert other_process_view.seen_before("evt_new") is False


def test_sqlite_store_prunes_after_ttl(tmp_path: Path) -> None:
    store = SQLiteDedupStore(tmp_path / "seen.db", ttl=60)
    store.seen_before("old")
    assert store.prune(now=time.time() + 30) == 0
    assert store.prune(now=time.time() + 61) == 1
    assert store.seen_before("old") is False, "forgotten after the TTL"
    store.close()


def test_sqlite_store_prunes_by_itself(tmp_path: Path) -> None:
    store = SQLiteDedupStore(tmp_path / "seen.db", ttl=0, prune_every=3)
    for event_id in ("a", "b"):
        store.seen_before(event_id)
    time.sleep(0.01)
    store.seen_before("c")  # the third new id prunes everything older than ttl=0
    assert store.seen_before("a") is False


def test_sqlite_store_rejects_an_unsafe_table_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteDedupStore(tmp_path / "x.db", table="seen; DROP TABLE x")


# --- Redis: only where redis-server and the redis package are installed -------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None or importlib.util.find_spec("redis") is None:
        pytest.skip("needs the redis-server binary and the redis package")
    port = free_port()
    args = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly"]
    with subprocess.Popen(
        [*args, "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as process:
        try:
            wait_for_port(port, process)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def wait_for_port(port: int, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited: {process.stderr and process.stderr.read()!r}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    pytest.fail("redis-server did not start")


def test_redis_store_contract_and_expiry(redis_url: str) -> None:
    import redis

    store = RedisDedupStore.from_url(redis_url, ttl=3600)
    assert_store_contract(store)
    client = redis.Redis.from_url(redis_url)
    assert 3500 < client.ttl("tidings:seen:evt_a") <= 3600
    client.delete("tidings:seen:evt_a")
    assert store.seen_before("evt_a") is False, "forgotten once the key expires"
    shared = RedisDedupStore(client, prefix="tidings:seen:")
    assert shared.seen_before("evt_b") is True


def test_redis_store_lives_in_its_prefix() -> None:
    calls: list[tuple[str, int, bool]] = []

    class FakeClient:
        def set(self, name: str, value: str, *, ex: int, nx: bool) -> bool | None:
            calls.append((name, ex, nx))
            return True

    assert RedisDedupStore(FakeClient(), ttl=5, prefix="app:").seen_before("evt") is False
    assert calls == [("app:evt", 5, True)]


def test_memory_store_is_thread_safe_under_eviction() -> None:
    store = MemoryDedupStore(capacity=10)
    errors: list[BaseException] = []

    def hammer(offset: int) -> None:
        try:
            for n in range(2000):
                store.seen_before(f"{offset}-{n % 37}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
