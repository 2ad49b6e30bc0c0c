"""Bodies print as JavaScript's ``JSON.stringify(JSON.parse(body))`` does: its number forms
and key order, the C encoder where that suffices. Checked against Node itself in
tests/e2e/test_interop_node_json.py."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import strategies
from tidings.domain.events import Envelope
from tidings.domain.js_json import (
    MAX_SAFE_INTEGER,
    NOT_FINITE,
    UNSAFE_INTEGER,
    compact_json,
    first_unportable,
    js_number,
)

# What node prints for String(x) (checked with node v20).
NUMBERS: list[tuple[float, str]] = [
    (0.0, "0"),
    (-0.0, "0"),
    (1.0, "1"),
    (100.0, "100"),
    (1.5, "1.5"),
    (0.1, "0.1"),
    (0.1 + 0.2, "0.30000000000000004"),
    (123.456, "123.456"),
    (0.0001, "0.0001"),
    (0.00001, "0.00001"),
    (0.000001, "0.000001"),
    (1.5e-6, "0.0000015"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (1.2345e-10, "1.2345e-10"),
    (2.0**53, "9007199254740992"),
    (1e16, "10000000000000000"),
    (1.2345678901234567e19, "12345678901234567000"),
    (1e20, "100000000000000000000"),
    (123456789012345680000.0, "123456789012345680000"),
    (1e21, "1e+21"),
    (1.5e22, "1.5e+22"),
    (5e-324, "5e-324"),
    (2.2250738585072014e-308, "2.2250738585072014e-308"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (-1.0, "-1"),
    (-100.0, "-100"),
    (-1.5, "-1.5"),
    (-0.00001, "-0.00001"),
    (-1e-7, "-1e-7"),
    (-1e16, "-10000000000000000"),
    (-1e21, "-1e+21"),
    (-5e-324, "-5e-324"),
    (-1.7976931348623157e308, "-1.7976931348623157e+308"),
    (math.nan, "NaN"),
    (math.inf, "Infinity"),
    (-math.inf, "-Infinity"),
]


@pytest.mark.parametrize(("value", "text"), NUMBERS, ids=[text for _, text in NUMBERS])
def test_numbers_print_as_javascript_prints_them(value: float, text: str) -> None:
    assert js_number(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_printed_number_reads_back_as_itself(value: float) -> None:
    assert float(js_number(value)) == value
    if value > 0:
        assert js_number(-value) == "-" + js_number(value)


BODIES: list[tuple[Any, str]] = [
    ({"a": 100.0, "b": [1.0, -0.0, 2.5]}, '{"a":100,"b":[1,0,2.5]}'),
    ({"small": 1e-5, "tiny": 1e-7}, '{"small":0.00001,"tiny":1e-7}'),
    ({"big": 1e16, "huge": 1.5e22}, '{"big":10000000000000000,"huge":1.5e+22}'),
    (
        {"int": MAX_SAFE_INTEGER, "float": 2.0**53},
        '{"int":9007199254740991,"float":9007199254740992}',
    ),
    (
        {"x": 'é \u2028 \n\t"\\ \x00 \U0001f600'},
        '{"x":"é \u2028 \\n\\t\\"\\\\ \\u0000 \U0001f600"}',
    ),
    ({"t": (1.0, "a")}, '{"t":[1,"a"]}'),
    # JSON.stringify writes NaN and the infinities as null (emit refuses them)
    ({"n": math.nan, "i": [math.inf, -math.inf]}, '{"n":null,"i":[null,null]}'),
    # an object lists its array-index keys first, ascending, then the rest as they came
    ({"b": 1, "10": 2, "2": 3, "a": 4}, '{"2":3,"10":2,"b":1,"a":4}'),
    ({"01": 1, "-1": 2, "1.5": 3, "0": 4}, '{"0":4,"01":1,"-1":2,"1.5":3}'),
    ({"z": 1, "4294967295": 2, "4294967294": 3}, '{"4294967294":3,"z":1,"4294967295":2}'),
    ({"z": 1, "\u0661": 2}, '{"z":1,"\u0661":2}'),  # an Arabic-Indic digit is no index
    ({"z": 1, 2: "int key", None: 0}, '{"2":"int key","z":1,"null":0}'),  # keys as json.dumps
    ({"b": 1e-7, "3": {"y": 0, "1": 0.5}}, '{"3":{"1":0.5,"y":0},"b":1e-7}'),
    ({"nested": [{"x": [100.0]}]}, '{"nested":[{"x":[100]}]}'),
]


@pytest.mark.parametrize(("value", "text"), BODIES)
def test_bodies_print_as_javascript_prints_them(value: Any, text: str) -> None:
    assert compact_json(value) == text


json_values = strategies.json_values(max_leaves=20)


@given(json_values)
def test_both_encoders_agree(value: Any) -> None:
    """A float only the pure-Python encoder prints (1e-7) sends the whole body there."""
    assert compact_json([value, 1e-7]) == f"[{compact_json(value)},1e-7]"


@given(json_values)
def test_the_text_reads_back_as_the_value(value: Any) -> None:
    # read as JavaScript reads it, every number a double: 1e16 + 2 prints as an integer
    assert json.loads(compact_json(value), parse_int=float) == value


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(alphabet="ab"), children),
    )
)
def test_without_floats_or_index_keys_it_is_json_dumps(value: Any) -> None:
    assert compact_json(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def test_the_envelope_is_printed_so() -> None:
    envelope = Envelope("evt_1", "order.paid", 0, "acme", {"total": 100.0, "rate": 1e-7}, {})
    assert envelope.to_json() == (
        '{"id":"evt_1","type":"order.paid","createdUtc":"1970-01-01T00:00:00Z",'
        '"companyId":"acme","payload":{"total":100,"rate":1e-7},"metadata":{}}'
    )


UNPORTABLE: list[tuple[Any, tuple[str, str] | None]] = [
    ({"a": 1, "b": [True, None, "x", 1.5]}, None),
    ({"max": MAX_SAFE_INTEGER, "min": -MAX_SAFE_INTEGER, "f": 1e300}, None),
    ({"a": 2**53}, ("payload.a", UNSAFE_INTEGER)),
    ({"a": -(2**53)}, ("payload.a", UNSAFE_INTEGER)),
    ({"a": {"b": [0, {"c": 2**64}]}}, ("payload.a.b.1.c", UNSAFE_INTEGER)),
    ({"a": [1, 2], "b": (3, 10**30)}, ("payload.b.1", UNSAFE_INTEGER)),
    ({"x": 1, "y": math.nan, "z": 2**60}, ("payload.y", NOT_FINITE)),
    ({"x": [-math.inf]}, ("payload.x.0", NOT_FINITE)),
    ({7: 2**53}, ("payload.7", UNSAFE_INTEGER)),
]


@pytest.mark.parametrize(("value", "found"), UNPORTABLE)
def test_numbers_javascript_cannot_read_back_are_found(
    value: Any, found: tuple[str, str] | None
) -> None:
    assert first_unportable(value, "payload") == found


def test_a_bare_number_is_found_at_the_root() -> None:
    assert first_unportable(2**53, "metadata") == ("metadata", UNSAFE_INTEGER)
    assert first_unportable(True, "metadata") is None
