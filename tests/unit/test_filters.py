"""Subscription filters (domain/filters.py): every operator's semantics, table-driven;
what is refused on save and how it is named; the compiled predicate never raises."""

from __future__ import annotations

import time
from typing import Any

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.strategies import json_values
from tidings.domain import filters
from tidings.domain.filters import (
    MAX_CONDITIONS,
    MAX_FILTER_CHARS,
    MAX_LIST,
    MAX_NESTING,
    MAX_REGEX_CHARS,
    FilterBook,
    FilteredSubscription,
    InvalidFilter,
    View,
    checked_filter,
    compile_filter,
    filter_text,
    json_equal,
    stored_check,
)

ENVELOPE: dict[str, Any] = {
    "id": "evt_1",
    "type": "payment.succeeded",
    "createdUtc": "2026-01-28T10:30:00Z",
    "companyId": "tnt_1",
    "payload": {
        "amount": {"amount": 1500, "currency": "usd"},
        "method": "card",
        "ratio": 0.5,
        "refunded": False,
        "note": None,
        "tags": ["vip", "new"],
        "scores": [3, 12],
        "matrix": [[1, 2], [3]],
        "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 5}, {"other": 1}],
        "empty": [],
        "nested": {"deep": {"er": {"est": "yes"}}},
        "count": 1,
    },
    "metadata": {"source": "crm"},
}

CASES: list[tuple[dict[str, Any], bool]] = [
    # a bare value is $eq
    ({"type": "payment.succeeded"}, True),
    ({"type": "payment.failed"}, False),
    ({"payload.amount.amount": 1500}, True),
    ({"payload.nested.deep.er.est": "yes"}, True),
    ({"payload.amount": {"amount": 1500, "currency": "usd"}}, True),  # an object, whole
    ({"payload.amount": {"currency": "usd", "amount": 1500}}, True),  # key order aside
    ({"payload.amount": {"amount": 1500}}, False),
    # $eq: numbers across int and float; booleans are not numbers; no cross-type equality
    ({"payload.amount.amount": {"$eq": 1500.0}}, True),
    ({"payload.count": {"$eq": True}}, False),
    ({"payload.count": True}, False),
    ({"payload.refunded": {"$eq": 0}}, False),
    ({"payload.refunded": False}, True),
    ({"payload.amount.amount": "1500"}, False),
    ({"payload.tags": {"$eq": ["vip", "new"]}}, True),  # the array, whole
    ({"payload.tags": ["new", "vip"]}, False),  # arrays are ordered
    ({"payload.tags": "vip"}, True),  # or one element
    ({"payload.matrix": [3]}, True),  # an element that is an array
    ({"payload.matrix": 3}, False),  # arrays in arrays are not flattened
    ({"payload.empty": []}, True),
    # null: the value null, or nothing at all (as MongoDB)
    ({"payload.note": None}, True),
    ({"payload.absent": None}, True),
    ({"payload.method": None}, False),
    # $ne: the negation of $eq, so a missing path passes
    ({"payload.method": {"$ne": "cash"}}, True),
    ({"payload.method": {"$ne": "card"}}, False),
    ({"payload.absent": {"$ne": "card"}}, True),
    ({"payload.tags": {"$ne": "vip"}}, False),
    ({"payload.note": {"$ne": None}}, False),
    ({"payload.absent": {"$ne": None}}, False),
    ({"payload.count": {"$ne": True}}, True),
    # comparisons: numbers with numbers, strings with strings, never across
    ({"payload.amount.amount": {"$gt": 1000}}, True),
    ({"payload.amount.amount": {"$gt": 1500}}, False),
    ({"payload.amount.amount": {"$gte": 1500}}, True),
    ({"payload.amount.amount": {"$lt": 1500.5}}, True),
    ({"payload.amount.amount": {"$lte": 1499}}, False),
    ({"payload.ratio": {"$gt": 0, "$lt": 1}}, True),
    ({"payload.amount.amount": {"$gte": 1000, "$lt": 1200}}, False),
    ({"payload.refunded": {"$lt": 1}}, False),  # false is not 0
    ({"payload.method": {"$gt": 1}}, False),
    ({"payload.amount.amount": {"$gt": "1"}}, False),
    ({"payload.method": {"$gte": "card"}}, True),
    ({"createdUtc": {"$gte": "2026-01-01T00:00:00Z"}}, True),
    ({"createdUtc": {"$lt": "2026-01-01T00:00:00Z"}}, False),
    ({"payload.amount": {"$gt": 0}}, False),  # an object is not a number
    ({"payload.absent": {"$lt": 10}}, False),
    ({"payload.note": {"$lt": 10}}, False),
    ({"payload.scores": {"$gt": 10}}, True),  # any element
    ({"payload.scores": {"$gt": 5, "$lt": 10}}, True),  # 12 > 5 and 3 < 10 (as MongoDB)
    ({"payload.scores": {"$gt": 20}}, False),
    # $in / $nin
    ({"payload.method": {"$in": ["card", "sepa"]}}, True),
    ({"payload.method": {"$in": ["sepa"]}}, False),
    ({"payload.count": {"$in": [1.0]}}, True),
    ({"payload.count": {"$in": [True]}}, False),
    ({"payload.refunded": {"$in": [0, False]}}, True),
    ({"payload.refunded": {"$in": [0]}}, False),
    ({"payload.tags": {"$in": ["vip"]}}, True),
    ({"payload.tags": {"$in": [["vip", "new"]]}}, True),
    ({"payload.amount": {"$in": [{"currency": "usd", "amount": 1500}]}}, True),
    ({"payload.absent": {"$in": ["x"]}}, False),
    ({"payload.absent": {"$in": ["x", None]}}, True),
    ({"payload.method": {"$in": []}}, False),
    ({"payload.method": {"$nin": ["sepa"]}}, True),
    ({"payload.method": {"$nin": ["card"]}}, False),
    ({"payload.absent": {"$nin": ["card"]}}, True),
    ({"payload.tags": {"$nin": ["vip"]}}, False),
    # $exists: present (even as null) or not
    ({"payload.note": {"$exists": True}}, True),
    ({"payload.absent": {"$exists": True}}, False),
    ({"payload.absent": {"$exists": False}}, True),
    ({"payload.method.deeper": {"$exists": False}}, True),  # through a string: nothing
    ({"payload.items.sku": {"$exists": True}}, True),
    ({"payload.items.missing": {"$exists": True}}, False),
    ({"payload.empty": {"$exists": True}}, True),
    # $regex: strings only, on RE2
    ({"payload.method": {"$regex": "^ca"}}, True),
    ({"payload.method": {"$regex": "^CA"}}, False),
    ({"payload.method": {"$regex": "^CA", "$options": "i"}}, True),
    ({"payload.items.sku": {"$regex": r"^b-\d$"}}, True),
    ({"payload.tags": {"$regex": "^v"}}, True),
    ({"payload.amount.amount": {"$regex": "15"}}, False),  # a number is not text
    ({"payload.absent": {"$regex": ".*"}}, False),
    ({"payload.method": {"$regex": "é"}}, False),
    # $not on a path: the negation of a condition, so a missing path passes
    ({"payload.amount.amount": {"$not": {"$lt": 1000}}}, True),
    ({"payload.amount.amount": {"$not": {"$gt": 1000}}}, False),
    ({"payload.absent": {"$not": {"$gt": 1000}}}, True),
    ({"payload.method": {"$not": "card"}}, False),
    ({"payload.method": {"$not": {"$regex": "^x"}}}, True),
    ({"payload.method": {"$not": {"$not": "card"}}}, True),
    # arrays on the way: every element that is an object; a number indexes
    ({"payload.items.sku": "b-2"}, True),
    ({"payload.items.qty": {"$gt": 4}}, True),
    ({"payload.items.qty": {"$gt": 5}}, False),
    ({"payload.items.1.sku": "b-2"}, True),
    ({"payload.items.0.sku": "b-2"}, False),
    ({"payload.items.7.sku": {"$exists": True}}, False),
    ({"payload.tags.0": "vip"}, True),
    ({"payload.tags.1": "vip"}, False),
    ({"payload.tags.x": {"$exists": True}}, False),
    # several paths: all must hold
    ({"payload.amount.amount": {"$gte": 1000}, "payload.method": {"$in": ["card"]}}, True),
    ({"payload.amount.amount": {"$gte": 1000}, "payload.method": "sepa"}, False),
    ({}, True),
    # $and, $or, $not around filters
    ({"$and": [{"type": "payment.succeeded"}, {"payload.count": 1}]}, True),
    ({"$and": [{"type": "payment.succeeded"}, {"payload.count": 2}]}, False),
    ({"$or": [{"type": "x.y"}, {"metadata.source": "crm"}]}, True),
    ({"$or": [{"type": "x.y"}, {"metadata.source": "web"}]}, False),
    ({"$not": {"type": "payment.succeeded"}}, False),
    ({"$not": {"payload.absent": 1}}, True),
    (
        {
            "$or": [
                {"$and": [{"payload.method": "card"}, {"payload.amount.amount": {"$gt": 2000}}]},
                {"$not": {"payload.tags": {"$nin": ["vip"]}}},
            ]
        },
        True,
    ),
    ({"type": "payment.succeeded", "$or": [{"payload.count": 2}, {"payload.count": 3}]}, False),
]


@pytest.mark.parametrize(("spec", "expected"), CASES, ids=[filter_text(c) for c, _ in CASES])
def test_semantics(spec: dict[str, Any], expected: bool) -> None:
    assert compile_filter(spec)(ENVELOPE) is expected
    # the negation, through $not, answers the opposite (a predicate is total)
    assert compile_filter({"$not": spec})(ENVELOPE) is (not expected)


def test_every_operator_is_covered_by_the_table() -> None:
    used = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key.startswith("$"):
                    used.add(key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for spec, _ in CASES:
        walk(spec)
    assert set(filters.FIELD_OPERATORS) | set(filters.LOGICAL_OPERATORS) <= used


@pytest.mark.parametrize(
    "document", [None, True, 3, "text", [], [ENVELOPE], {"payload": "flat"}, {"payload": []}]
)
def test_documents_of_any_shape_never_raise(document: Any) -> None:
    for spec, _ in CASES:
        assert compile_filter(spec)(document) in (True, False)


INVALID: list[tuple[Any, str, str | None]] = [
    ([], "filter", None),
    ("payload.x", "filter", None),
    ({"payload.x": {"$gt": [1]}}, "filter.payload.x", "$gt"),
    ({"payload.x": {"$gt": None}}, "filter.payload.x", "$gt"),
    ({"payload.x": {"$lte": True}}, "filter.payload.x", "$lte"),
    ({"payload.x": {"$in": "card"}}, "filter.payload.x", "$in"),
    ({"payload.x": {"$nin": {"a": 1}}}, "filter.payload.x", "$nin"),
    ({"payload.x": {"$in": list(range(MAX_LIST + 1))}}, "filter.payload.x", "$in"),
    ({"payload.x": {"$exists": 1}}, "filter.payload.x", "$exists"),
    ({"payload.x": {"$regex": 5}}, "filter.payload.x", "$regex"),
    ({"payload.x": {"$regex": "(?<=a)b"}}, "filter.payload.x", "$regex"),  # not RE2
    ({"payload.x": {"$regex": "(a"}}, "filter.payload.x", "$regex"),
    ({"payload.x": {"$regex": "a" * (MAX_REGEX_CHARS + 1)}}, "filter.payload.x", "$regex"),
    ({"payload.x": {"$regex": "a{1000}{1000}"}}, "filter.payload.x", "$regex"),  # too big
    ({"payload.x": {"$regex": "a", "$options": "g"}}, "filter.payload.x", "$options"),
    ({"payload.x": {"$options": "i"}}, "filter.payload.x", "$options"),
    ({"payload.x": {"$size": 2}}, "filter.payload.x", "$size"),
    ({"payload.x": {"$and": [{"a": 1}]}}, "filter.payload.x", "$and"),
    ({"payload.x": {"$eq": 1, "plain": 2}}, "filter.payload.x", None),
    ({"$gt": 5}, "filter", "$gt"),
    ({"$nor": [{"a": 1}]}, "filter", "$nor"),
    ({"$and": []}, "filter", "$and"),
    ({"$or": {"a": 1}}, "filter", "$or"),
    ({"$and": [{"a": 1}, "b"]}, "filter.$and[1]", None),
    ({"$or": [{"a": {"$gt": {}}}]}, "filter.$or[0].a", "$gt"),
    ({"$not": [{"a": 1}]}, "filter.$not", None),
    ({"payload..x": 1}, "filter.payload..x", None),
    ({".x": 1}, "filter..x", None),
    ({".".join("p" * 17): 1}, "filter." + ".".join("p" * 17), None),
    ({"payload.x": float("nan")}, "filter.payload.x", "$eq"),
]


@pytest.mark.parametrize(
    ("spec", "field", "operator"), INVALID, ids=[str(i[0])[:60] for i in INVALID]
)
def test_invalid_filters_name_the_path_and_the_operator(
    spec: Any, field: str, operator: str | None
) -> None:
    with pytest.raises(InvalidFilter) as caught:
        compile_filter(spec)
    assert (caught.value.field, caught.value.operator) == (field, operator)
    assert str(caught.value).startswith(field)
    if operator is not None:
        assert operator in str(caught.value)


def test_limits_on_size_conditions_and_nesting() -> None:
    with pytest.raises(InvalidFilter, match="characters"):
        checked_filter({"payload.x": "y" * MAX_FILTER_CHARS})
    with pytest.raises(InvalidFilter, match="conditions"):
        compile_filter({f"p{n}": n for n in range(MAX_CONDITIONS + 1)})
    nested: dict[str, Any] = {"a": 1}
    for _ in range(MAX_NESTING):
        nested = {"$not": nested}
    compile_filter(nested)
    with pytest.raises(InvalidFilter, match="nested"):
        compile_filter({"$not": nested})
    with pytest.raises(InvalidFilter, match="Unicode"):
        checked_filter({"a": "\ud800"})
    assert checked_filter({"a": "\x00"}) == ({"a": "\x00"}, '{"a":"\\u0000"}')
    assert checked_filter({}) is None  # an empty filter is no filter
    assert checked_filter({"a": 1}) == ({"a": 1}, '{"a":1}')


def test_regexes_run_in_linear_time() -> None:
    """A pattern that makes a backtracking engine take exponential time (Python's re
    would not finish this) is answered at once."""
    predicate = compile_filter({"payload.s": {"$regex": "^(a+)+$"}})
    started = time.perf_counter()
    assert predicate({"payload": {"s": "a" * 50_000 + "b"}}) is False
    assert time.perf_counter() - started < 1.0
    assert predicate({"payload": {"s": "aaaa"}}) is True


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.sampled_from(["b+c", "^é", "x$", "(?i)A.B", "[0-9]{2}", "", "\\bword\\b"]),
    text=st.text(max_size=20),
)
def test_the_fast_regex_path_agrees_with_re2(pattern: str, text: str) -> None:
    predicate = compile_filter({"s": {"$regex": pattern}})
    assert predicate({"s": text}) is (re2.search(pattern, text) is not None)


# --- property: a valid filter never raises, whatever JSON it is given ---------------------

PATHS = st.sampled_from(["a", "a.b", "a.0", "a.b.c", "payload.x", "0", "a.1.b", ""]).filter(bool)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
BOUNDS = st.integers(-100, 100) | st.floats(-100, 100) | st.text(max_size=3)


def conditions() -> st.SearchStrategy[Any]:
    operator = st.one_of(
        st.builds(lambda v: {"$eq": v}, json_values(8)),
        st.builds(lambda v: {"$ne": v}, json_values(8)),
        st.builds(lambda op, v: {op: v}, st.sampled_from(filters.COMPARISONS), BOUNDS),
        st.builds(
            lambda op, v: {op: v},
            st.sampled_from(["$in", "$nin"]),
            st.lists(json_values(4), max_size=4),
        ),
        st.builds(lambda v: {"$exists": v}, st.booleans()),
        st.builds(
            lambda p, o: {"$regex": p, "$options": o},
            st.sampled_from(["^a", "b", ".*", "[0-9]+", "é"]),
            st.sampled_from(["", "i", "ms"]),
        ),
    )
    return st.recursive(
        operator | json_values(8).filter(lambda v: not (isinstance(v, dict) and v)),
        lambda inner: st.builds(lambda c: {"$not": c}, inner),
        max_leaves=3,
    )


def documents() -> st.SearchStrategy[dict[str, Any]]:
    fields = st.dictionaries(PATHS, conditions(), max_size=3)
    return st.recursive(
        fields,
        lambda inner: st.one_of(
            st.builds(lambda fs: {"$and": fs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda f: {"$not": f}, inner),
        ),
        max_leaves=6,
    )


@settings(max_examples=400, deadline=None)
@given(spec=documents(), document=json_values(40))
def test_a_valid_filter_never_raises_on_any_json(spec: dict[str, Any], document: Any) -> None:
    predicate = compile_filter(spec)
    assert predicate(document) in (True, False)
    assert predicate({"payload": document, "a": document}) in (True, False)
    # and negating it answers the opposite
    assert compile_filter({"$not": spec})(document) is (not predicate(document))


@settings(max_examples=400, deadline=None)
@given(
    spec=json_values(30)
    | st.dictionaries(
        st.sampled_from(["a", "$and", "$or", "$not", "$gt", "a.$in"]), json_values(10)
    )
)
def test_any_json_is_a_filter_or_an_invalid_filter(spec: Any) -> None:
    """What an API caller may send: compiled, or refused with InvalidFilter; nothing else."""
    try:
        checked = checked_filter(spec)
    except InvalidFilter:
        return
    if checked is not None:
        assert compile_filter(checked[0])(ENVELOPE) in (True, False)


@settings(max_examples=200, deadline=None)
@given(value=json_values(10), document=json_values(20))
def test_ne_and_nin_are_the_negations_of_eq_and_in(value: Any, document: Any) -> None:
    envelope = {"a": document}
    eq = compile_filter({"a": {"$eq": value}})(envelope)
    assert compile_filter({"a": {"$ne": value}})(envelope) is (not eq)
    assert compile_filter({"a": {"$in": [value]}})(envelope) is eq
    assert compile_filter({"a": {"$nin": [value]}})(envelope) is (not eq)


@given(a=json_values(10), b=json_values(10))
def test_json_equality_is_symmetric_and_keeps_booleans_apart(a: Any, b: Any) -> None:
    assert json_equal(a, b) is json_equal(b, a)
    assert json_equal(a, a)
    assert not json_equal(True, 1) and not json_equal(0, False) and json_equal(1, 1.0)


# --- stored filters and one tenant's book ---------------------------------------------------


def test_stored_filters_compile_once_and_a_refused_one_matches_nothing() -> None:
    text = filter_text({"payload.method": "card"})
    assert stored_check(text) is stored_check(text)
    assert stored_check(text)(View(ENVELOPE)) is True
    assert stored_check('{"payload.x":{"$size":1}}')(View(ENVELOPE)) is False
    assert stored_check("not json")(View(ENVELOPE)) is False


def test_a_book_picks_the_filtered_subscriptions_of_the_type_that_pass() -> None:
    import json

    book = FilterBook(
        7,
        [
            FilteredSubscription.stored(
                "sub_big", '["payment.*"]', '{"payload.amount.amount":{"$gte":1000}}'
            ),
            FilteredSubscription.stored(
                "sub_small", '["payment.succeeded"]', '{"payload.amount.amount":{"$lt":1000}}'
            ),
            FilteredSubscription.stored("sub_other", '["client.*"]', '{"type":{"$exists":true}}'),
            FilteredSubscription.stored("sub_all", '["*"]', '{"metadata.source":"crm"}'),
        ],
    )
    body = json.dumps(ENVELOPE)
    assert book.version == 7
    wanted = [ids for _, ids in book.wanting("payment.succeeded")]
    assert wanted == [("sub_big",), ("sub_small",), ("sub_all",)]
    assert book.matching("payment.succeeded", body) == ["sub_big", "sub_all"]
    assert book.matching("client.created", json.dumps({**ENVELOPE, "metadata": {}})) == [
        "sub_other"
    ]
    assert book.matching("lead.created", body) == ["sub_all"]
    shared = FilteredSubscription.stored(
        "sub_same", '["payment.*"]', '{"payload.amount.amount":{"$gte":1000}}'
    )
    twice = FilterBook(9, [*book.subscriptions, shared])
    assert next(ids for _, ids in twice.wanting("payment.failed")) == ("sub_big", "sub_same")
    assert twice.matching("payment.succeeded", body) == ["sub_big", "sub_same", "sub_all"]
    narrow = FilterBook(8, book.subscriptions[:2])
    assert narrow.matching("lead.created", "not even parsed: nothing wants the type") == []
