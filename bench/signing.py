"""What signing one delivery costs in each signature scheme, on this machine's CPU.

Run: ``.venv/bin/python bench/signing.py [--body-bytes 1024] [--repeat 31]``.

Each figure is ``signature_headers(...)`` (what the dispatcher calls per attempt) for a
typical envelope of ``--body-bytes``, in µs per delivery: the median over ``--repeat``
batches, each batch long enough (about 20 ms) for the clock not to matter. Keys are the
dispatcher's: loaded once and cached, so a figure is the signing alone; the ``key load``
row is what a cache miss adds for an RSA key (parsing the PEM; its arithmetic was checked
once, when the key was saved: the ``key check`` row). The
``threads`` rows sign RSA-2048 on 1 and on 2 threads at once (wall time per signature, and
the cores the process kept busy): the dispatcher signs RSA in a thread, so if
``cryptography`` releases the GIL while it signs, 2 threads come near twice the throughput
of 1 on 2 free cores; on a machine other processes keep busy, "cores busy" says so, and
the last lines check the GIL release itself (a test that no load can fool): RSA should
let go of it, ``hmac`` should not (the event loop would wait to get it back after every
signature: the ``beside a thread running Python`` row). It prints one table; every
figure is also a ratio (x hmac) to ``hmac`` (both header sets, the default scheme).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

from cryptography.hazmat.primitives.serialization import load_pem_private_key  # noqa: E402

from tidings.domain.events import Envelope  # noqa: E402
from tidings.domain.signatures import (  # noqa: E402
    RSA_KEY_SIZES,
    SignatureScheme,
    generate_rsa_key,
    generate_secret,
    generate_signing_key,
    sign_sha256_hex,
    sign_standard_v1,
    signature_headers,
)

BATCH_SECONDS = 0.02
MSG_ID = "evt_01J9ZQ4M6T8N2V5X7B3C1D0E9F"
TIMESTAMP = 1_700_000_000


def envelope(size: int) -> bytes:
    """A client.created envelope padded with a note to ``size`` bytes (at least its bare size)."""

    def build(note: str) -> bytes:
        payload = {
            "clientId": "cli_42",
            "name": "Zoë Ada Lovelace",
            "email": "ada@example.com",
            "amount": {"amount": 1999, "currency": "EUR"},
            "tags": ["vip", "newsletter"],
            "note": note,
        }
        return (
            Envelope(
                id=MSG_ID,
                type="client.created",
                created_ms=TIMESTAMP * 1000,
                company_id="acme",
                payload=payload,
                metadata={"source": "bench"},
            )
            .to_json()
            .encode()
        )

    return build("x" * max(0, size - len(build(""))))


def per_call_us(call: Callable[[], object], repeat: int) -> float:
    """Median µs per call over ``repeat`` batches of a calibrated size."""
    number = 1
    while True:
        started = time.perf_counter()
        for _ in range(number):
            call()
        if time.perf_counter() - started >= BATCH_SECONDS:
            break
        number *= 2
    batches = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            call()
        batches.append((time.perf_counter() - started) / number)
    return statistics.median(batches) * 1e6


def threaded_us(
    call: Callable[[], object], threads: int, calls: int, repeat: int
) -> tuple[float, float]:
    """Median wall µs per call when ``threads`` threads each make ``calls`` calls at once, and
    the cores this process kept busy meanwhile (its CPU time over the wall time): near
    ``threads`` when the GIL is released and the cores are free, near 1 when the GIL is not,
    below 1 when other processes hold the cores."""

    def run() -> tuple[float, float]:
        start = threading.Barrier(threads + 1)

        def work() -> None:
            start.wait()
            for _ in range(calls):
                call()

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        start.wait()
        started, cpu = time.perf_counter(), time.process_time()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - started
        return wall / (threads * calls), (time.process_time() - cpu) / wall

    runs = [run() for _ in range(repeat)]
    return (
        statistics.median(w for w, _ in runs) * 1e6,
        statistics.median(c for _, c in runs),
    )


def gil_released_during(call: Callable[[], object], calls: int = 5) -> int:
    """How often the main thread's Python loop ran while another thread made ``calls``
    calls: 0 if ``call`` holds the GIL throughout. With a long switch interval, a thread
    running Python is not preempted in between, so only a GIL released inside ``call``
    lets the loop run; unlike the throughput rows, this holds on a busy machine too."""
    done = threading.Event()

    def work() -> None:
        for _ in range(calls):
            call()
        done.set()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.2)
    try:
        worker = threading.Thread(target=work)
        worker.start()
        loops = 0
        while not done.is_set():
            loops += 1
        worker.join()
    finally:
        sys.setswitchinterval(previous)
    return loops


@contextlib.contextmanager
def python_running_beside() -> Iterator[None]:
    """Another thread runs Python meanwhile, as the sender's thread and SQLite's writer
    do beside the dispatcher's event loop: a signature that lets go of the GIL waits to
    get it back."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        yield
    finally:
        stop.set()
        spinner.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=31, help="batches per figure (median)")
    args = parser.parse_args()
    body = envelope(args.body_bytes)
    secret, ed_key = generate_secret(), generate_signing_key()
    rsa_keys = {bits: generate_rsa_key(bits) for bits in RSA_KEY_SIZES}

    def headers(key: str, scheme: SignatureScheme) -> Callable[[], object]:
        return lambda: signature_headers([key], MSG_ID, TIMESTAMP, body, scheme)

    def cost(key: str, scheme: SignatureScheme) -> float:
        return per_call_us(headers(key, scheme), args.repeat)

    rows: list[tuple[str, float]] = [
        ("hmac (X-Webhook-* and webhook-* v1)", cost(secret, SignatureScheme.HMAC)),
        (
            "  of which X-Webhook-Signature",
            per_call_us(lambda: sign_sha256_hex(secret, TIMESTAMP, body), args.repeat),
        ),
        (
            "  of which webhook-signature v1",
            per_call_us(lambda: sign_standard_v1(secret, MSG_ID, TIMESTAMP, body), args.repeat),
        ),
        ("hmac-body", cost(secret, SignatureScheme.HMAC_BODY)),
        ("ed25519 (v1a)", cost(ed_key, SignatureScheme.ED25519)),
    ]
    for bits, key in rsa_keys.items():
        rows.append((f"rsa-sha256 {bits}", cost(key, SignatureScheme.RSA_SHA256)))
    pem = rsa_keys[2048].encode()
    few = max(5, args.repeat // 4)
    rows.append(
        (
            "rsa-sha256 2048 key load (cache miss)",
            per_call_us(
                lambda: load_pem_private_key(pem, None, unsafe_skip_rsa_key_validation=True), few
            ),
        )
    )
    rows.append(
        (
            "rsa-sha256 2048 key check (once, when saved)",
            per_call_us(lambda: load_pem_private_key(pem, password=None), few),
        )
    )
    rsa_2048 = headers(rsa_keys[2048], SignatureScheme.RSA_SHA256)
    one, one_cores = threaded_us(rsa_2048, 1, 100, max(5, args.repeat // 4))
    two, two_cores = threaded_us(rsa_2048, 2, 100, max(5, args.repeat // 4))
    rows.append((f"rsa-sha256 2048, 1 thread, wall ({one_cores:.2f} cores busy)", one))
    rows.append((f"rsa-sha256 2048, 2 threads, wall ({two_cores:.2f} cores busy)", two))

    hmac_signing = headers(secret, SignatureScheme.HMAC)
    with python_running_beside():
        rows.append(("hmac, beside a thread running Python, wall", per_call_us(hmac_signing, 5)))

    baseline = rows[0][1]
    width = max(len(name) for name, _ in rows)
    print(f"signing one delivery, {len(body)}-byte body, median of {args.repeat} batches")
    print(f"{'scheme':<{width}}  {'µs':>9}  {'x hmac':>8}")
    for name, micros in rows:
        print(f"{name:<{width}}  {micros:>9.1f}  {micros / baseline:>8.2f}")
    print(f"RSA-2048 on 2 threads: {one / two:.2f}x the throughput of 1 thread")
    loops = gil_released_during(rsa_2048)
    print(
        f"GIL released while RSA signs: {'yes' if loops else 'no'} "
        f"(another thread ran {loops} Python loops during 5 signatures)"
    )
    loops = gil_released_during(hmac_signing, calls=1000)
    print(
        f"GIL released while hmac signs: {'yes' if loops else 'no'} "
        f"(another thread ran {loops} Python loops during 1,000 signatures; each release "
        "costs the event loop a wait for the GIL)"
    )


if __name__ == "__main__":
    main()
