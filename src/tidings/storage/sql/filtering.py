"""Filtered fan-out: which filtered subscriptions take an event, decided in Python.

Unfiltered subscriptions are queued by SQL as they always were (``s.filter IS NULL``).
Filtered ones need their filter run on the envelope, in Python, with the filter compiled
once (``domain/filters.py``). Each process keeps every tenant's filtered subscriptions as
a ``FilterBook`` (bounded, least recently used out) stamped with the tenant's
``filters_version``. Every change to which subscriptions of a tenant are filtered, and
how, takes the tenant's stream lock and adds one to that version in its transaction
(``filters_changed``). An emit reads the version after taking the same lock, in its own
transaction, so the book it uses is exactly the filters that transaction sees: a stale
book is reloaded (in the transaction, or, on PostgreSQL's hot path, by calling again).
A tenant without filters pays one primary-key read per emit.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tidings.domain.cache import BoundedCache
from tidings.domain.filters import FilterBook, FilteredSubscription

TENANTS_KEPT = 10_000

FILTERS_VERSION = "SELECT filters_version FROM tenants WHERE id = :tenant"
FILTERED = (
    "SELECT id, event_types, filter FROM subscriptions"
    " WHERE tenant_id = :tenant AND filter IS NOT NULL"
)
BUMP_VERSION = "UPDATE tenants SET filters_version = filters_version + 1 WHERE id = :tenant"

Fetch = Callable[[str, Mapping[str, Any]], Sequence[Sequence[Any]]]
"""Runs one ``:name`` query in the caller's transaction and returns its rows."""


class FilterBooks:
    """Each tenant's ``FilterBook``, as of the version it was read at. Shared by the event
    loop and SQLite's writer thread, hence the lock."""

    def __init__(self, size: int = TENANTS_KEPT) -> None:
        self._books: BoundedCache[str, FilterBook] = BoundedCache(size)
        self._lock = threading.Lock()

    def get(self, tenant_id: str) -> FilterBook | None:
        with self._lock:
            return self._books.get(tenant_id)

    def clear(self) -> None:
        """Forget every book (each is read again, as committed, when next wanted)."""
        with self._lock:
            self._books.clear()

    def load(
        self, tenant_id: str, version: int | None, rows: Iterable[Sequence[Any]]
    ) -> FilterBook:
        """A book from ``FILTERED``'s rows (id, event_types, filter), remembered."""
        book = FilterBook(
            version,
            (FilteredSubscription.stored(sub_id, types, text) for sub_id, types, text in rows),
        )
        with self._lock:
            self._books.put(tenant_id, book)
        return book

    def current(self, fetch: Fetch, tenant_id: str) -> FilterBook:
        """The tenant's book as the caller's transaction sees it. The caller holds the
        tenant's stream lock (on SQLite, the write lock), so no filter changes until it
        commits."""
        found = fetch(FILTERS_VERSION, {"tenant": tenant_id})
        version = found[0][0] if found else None
        book = self.get(tenant_id)
        if book is not None and book.version == version:
            return book
        return self.load(tenant_id, version, fetch(FILTERED, {"tenant": tenant_id}))


def matched_param(matched: Sequence[str]) -> str:
    """The ``:matched`` parameter: the ids as a JSON array (one statement text however many)."""
    return json.dumps(list(matched))
