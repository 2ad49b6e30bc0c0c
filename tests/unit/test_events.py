"""Event types, patterns and the envelope."""

from __future__ import annotations

import json

import pytest

from tidings.domain.events import (
    Envelope,
    EventPattern,
    InvalidEventType,
    normalize_event_type,
)
from tidings.domain.ids import new_id
from tidings.domain.subscriptions import InvalidUrl, normalize_patterns, validate_url_shape


def test_event_types_are_lowercased() -> None:
    assert normalize_event_type(" Client.Created ") == "client.created"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "client..created",
        ".x",
        "x.",
        "a b",
        "a.*",
        "é.x",
        "1a.b",
        "a" * 129,
        "client.created\r\nX-Evil: 1",
    ],
)
def test_bad_event_types(bad: str) -> None:
    with pytest.raises(InvalidEventType):
        normalize_event_type(bad)


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("*", "client.created", True),
        ("client.*", "client.created", True),
        ("client.*", "client.status_changed", True),
        ("client.*", "clients.created", False),
        ("client.*", "client", False),
        ("Client.Created", "client.created", True),
        ("client.created", "client.updated", False),
        ("payment.*", "client.created", False),
    ],
)
def test_pattern_matching(pattern: str, event_type: str, expected: bool) -> None:
    assert EventPattern.parse(pattern).matches(event_type) is expected


@pytest.mark.parametrize("bad", ["**", "client.*.x", "*.created", "cli*", "client.c*"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(InvalidEventType):
        EventPattern.parse(bad)


def test_patterns_are_deduplicated_in_order() -> None:
    assert normalize_patterns(["b.x", "A.x", "b.X"]) == ("b.x", "a.x")
    with pytest.raises(ValueError):
        normalize_patterns([])


def test_envelope_shape() -> None:
    env = Envelope("evt_1", "client.created", 1_769_596_200_000, "ten_1", {"a": 1}, {"m": "é"})
    assert json.loads(env.to_json()) == {
        "id": "evt_1",
        "type": "client.created",
        "createdUtc": "2026-01-28T10:30:00Z",
        "companyId": "ten_1",
        "payload": {"a": 1},
        "metadata": {"m": "é"},
    }


def test_ids_are_unique_and_time_ordered() -> None:
    ids = [new_id("evt", now_ms=1000 + i) for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert all(i.startswith("evt_") and len(i) == 30 for i in ids)


@pytest.mark.parametrize(
    ("url", "allow_http", "ok"),
    [
        ("https://example.com/hook", False, True),
        ("http://example.com/hook", False, False),
        ("http://127.0.0.1:3000/hook", True, True),
        ("ftp://example.com", True, False),
        ("https://", False, False),
        ("https://a@example.com/", False, False),
        ("https://example.com:0/", False, False),
        ("https://example.com:99999/", False, False),
        ("https://exa mple.com/", False, False),
        ("https://example.com/" + "a" * 3000, False, False),
    ],
)
def test_url_shape(url: str, allow_http: bool, ok: bool) -> None:
    if ok:
        assert validate_url_shape(url, allow_http) == url
    else:
        with pytest.raises(InvalidUrl):
            validate_url_shape(url, allow_http)


def test_ids_made_in_a_row_sort_in_order() -> None:
    from tidings.domain.ids import new_id

    made = [new_id("key", now_ms=1_800_000_000_000) for _ in range(1000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert new_id("key", now_ms=1_700_000_000_000) > made[-1], "a clock step back keeps order"
