"""The Celery half of the baseline: the webhook sender Python teams hand-build today.

A worker runs it with ``celery -A bench.celery_tasks worker`` (from the repo root, with
the root and ``src`` on PYTHONPATH); the broker URL comes from ``BENCH_CELERY_BROKER``
because the worker is a separate process started by ``bench/celery_baseline.py``.

The task is deliberately ordinary: build the envelope, sign it, ``requests.post`` it
(no session, so a new connection per delivery, as most such code does), and retry non-2xx
or connection errors with ``self.retry(countdown=...)``. Its only addition is reporting:
each final outcome is pushed as JSON onto a Redis list named by the caller, so that the
driver can measure latency without a result backend.
"""

from __future__ import annotations

import json
import os
import time
from functools import cache
from typing import Any

import redis
import requests
from celery import Celery, Task

from tidings.domain.events import Envelope
from tidings.domain.signatures import signature_headers

TASK_NAME = "bench.deliver"
MAX_RETRIES = 10
EVENT_TYPE = "client.created"

app = Celery("bench", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@cache
def _redis() -> redis.Redis:
    """One client per worker child, created after the fork (hence lazy)."""
    return redis.Redis.from_url(str(app.conf.broker_url))


def _report(results_key: str, ok: bool, enqueued_at: float) -> None:
    """Push the final outcome; the driver derives latency and throughput from it."""
    outcome = {"ok": ok, "enqueued": enqueued_at, "done": time.time()}
    _redis().rpush(results_key, json.dumps(outcome))


def _post(url: str, secret: str, event_id: str, payload: dict[str, Any]) -> int:
    """One signed delivery attempt; returns the HTTP status (raises on transport errors)."""
    envelope = Envelope(event_id, EVENT_TYPE, int(time.time() * 1000), "bench", payload)
    body = envelope.to_json().encode()
    headers = {"Content-Type": "application/json"}
    headers.update(signature_headers([secret], event_id, int(time.time()), body))
    response = requests.post(url, data=body, headers=headers, timeout=10)
    return response.status_code


@app.task(bind=True, name=TASK_NAME, max_retries=MAX_RETRIES)
def deliver(
    self: Task,
    url: str,
    secret: str,
    event_id: str,
    payload: dict[str, Any],
    enqueued_at: float,
    results_key: str,
) -> None:
    """Deliver one webhook, retrying with exponential backoff like a typical sender."""
    try:
        status = _post(url, secret, event_id, payload)
    except requests.RequestException:
        status = 0
    if 200 <= status < 300:
        _report(results_key, True, enqueued_at)
        return
    if self.request.retries >= MAX_RETRIES:
        _report(results_key, False, enqueued_at)
        return
    raise self.retry(countdown=2**self.request.retries)
