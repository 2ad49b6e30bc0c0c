"""What JSON request bodies the API refuses although Python's json accepts them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tidings.web.strict_input import NOT_FINITE, UNSTORABLE, is_json, refusal

REFUSED: list[tuple[bytes, str, str]] = [
    (b'{"x": NaN}', "body.x", NOT_FINITE),
    (b'{"x": Infinity}', "body.x", NOT_FINITE),
    (b'{"x": -Infinity}', "body.x", NOT_FINITE),
    (b"NaN", "body", NOT_FINITE),
    (b'{"x": [1, {"y": [NaN]}]}', "body.x.1.y.0", NOT_FINITE),
    (b'{"x": 1e400}', "body.x", NOT_FINITE),
    (b'{"x": -1E+0400}', "body.x", NOT_FINITE),
    (b'{"x": 1' + b"0" * 309 + b".5}", "body.x", NOT_FINITE),
    (b'{"x": 1' + b"0" * 210 + b"e99}", "body.x", NOT_FINITE),
    (b'{"x": "\\ud800"}', "body.x", UNSTORABLE),
    (b'{"x": "\\uDFFF"}', "body.x", UNSTORABLE),
    (b'{"x": "a\\ude00\\ud83d"}', "body.x", UNSTORABLE),  # a pair in the wrong order
    (b'{"x": ["ok", "\\udbff"]}', "body.x.1", UNSTORABLE),
    (b'{"p": {"\\ud800": 1}}', "body.p", f"has a key that {UNSTORABLE}"),
    (b'{"x": "\xed\xa0\x80"}', "body.x", UNSTORABLE),  # a surrogate encoded as UTF-8
    (b'{"x": "a\\u0000b"}', "body.x", UNSTORABLE),
    (b'{"\\u0000": 1}', "body", f"has a key that {UNSTORABLE}"),
    ('{"x": NaN}'.encode("utf-16"), "body.x", NOT_FINITE),  # json.loads reads UTF-16 too
    ('{"x": NaN}'.encode("utf-32-le"), "body.x", NOT_FINITE),
    ('{"x": "\\ud800"}'.encode("utf-16-be"), "body.x", UNSTORABLE),
]

ACCEPTED = [
    b'{"x": "\\ud83d\\ude00"}',  # an escaped surrogate pair: one emoji
    b'{"x": "\\uD83D\\uDE00", "\\ud83d\\ude00": 1}',
    '{"x": "\U0001f600"}'.encode(),
    '{"x": "한국어 텍스트"}'.encode(),  # UTF-8 lead byte 0xED, not a surrogate
    b'{"x": "NaN", "y": "Infinity", "z": "e123"}',
    b'{"x": 1e308, "y": -1.7976931348623157e308, "z": 1e-400}',
    b'{"x": 1' + b"0" * 400 + b"}",  # an integer, not a float: never infinite
    b'{"x": "\\\\ud800"}',  # an escaped backslash, then text
    b"",
    b"{not json, NaN",  # not JSON at all: the route's own parser reports it
]


@pytest.mark.parametrize(("body", "path", "reason"), REFUSED)
def test_refused(body: bytes, path: str, reason: str) -> None:
    json.loads(body)  # all of these pass Python's parser
    assert refusal(body) == (path, reason)


@pytest.mark.parametrize("body", ACCEPTED)
def test_accepted(body: bytes) -> None:
    assert refusal(body) is None


@pytest.mark.parametrize(
    ("content_type", "parsed"),
    [
        (None, True),
        (b"application/json", True),
        (b"Application/JSON; charset=utf-8", True),
        (b"application/merge-patch+json", True),
        (b"application/x-www-form-urlencoded", False),
        (b"multipart/form-data; boundary=x", False),
        (b"text/plain", False),
        (b"text/json", False),
    ],
)
def test_which_bodies_are_json(content_type: bytes | None, parsed: bool) -> None:
    assert is_json(content_type) is parsed


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8", exclude_characters="\x00")),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(codec="utf-8", exclude_characters="\x00")), children, max_size=4
        )
    ),
    max_leaves=20,
)


def _insert(document: Any, value: Any, where: int) -> Any:
    """``document`` with ``value`` put into its ``where``-th container (or beside it)."""
    containers = [document] if isinstance(document, (list, dict)) else []
    stack = list(containers)
    while stack:
        node = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        found = [c for c in children if isinstance(c, (list, dict))]
        containers.extend(found)
        stack.extend(found)
    if not containers:
        return [document, value]
    target = containers[where % len(containers)]
    if isinstance(target, dict):
        target["\U0001f600 inserted"] = value
    else:
        target.append(value)
    return document


@given(json_values, st.booleans())
def test_valid_json_is_never_refused(document: Any, ascii_only: bool) -> None:
    assert refusal(json.dumps(document, ensure_ascii=ascii_only).encode()) is None


@given(
    json_values,
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(0, 50),
    st.booleans(),
)
def test_a_non_finite_number_anywhere_is_refused(
    document: Any, bad: float, where: int, ascii_only: bool
) -> None:
    body = json.dumps(_insert(document, bad, where), ensure_ascii=ascii_only).encode()
    found = refusal(body)
    assert found is not None and found[1] == NOT_FINITE


@given(json_values, st.integers(0xD800, 0xDFFF), st.integers(0, 50), st.booleans())
def test_a_lone_surrogate_anywhere_is_refused(
    document: Any, code: int, where: int, as_key: bool
) -> None:
    value: Any = {f"k{chr(code)}": 1} if as_key else f"v{chr(code)}"
    body = json.dumps(_insert(document, value, where)).encode()  # ASCII: escaped as \udxxx
    found = refusal(body)
    assert found is not None and UNSTORABLE in found[1]


@given(
    st.from_regex(r"-?(0|[1-9][0-9]{0,320})(\.[0-9]{1,5})?([eE][-+]?[0-9]{1,4})?", fullmatch=True)
)
@example("1e309")
@example("-1.8e308")
@example("9" * 209 + "e99")  # 1e307: finite
@example("9" * 210 + "e99")  # overflows with a two-digit exponent
@example("1" + "0" * 309 + ".0")
@example("1" + "0" * 308 + ".0")  # finite
def test_every_number_that_overflows_is_caught(number: str) -> None:
    """The cheap scan must never miss a number that ``json.loads`` reads as infinite."""
    parsed = json.loads(number)
    if isinstance(parsed, float) and not math.isfinite(parsed):
        assert refusal(number.encode()) == ("body", NOT_FINITE)
    else:
        assert refusal(number.encode()) is None
