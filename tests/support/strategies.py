"""Hypothesis strategies several test modules share."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tidings.domain.js_json import MAX_SAFE_INTEGER

KEYS = st.text(max_size=4) | st.from_regex(r"0|[1-9][0-9]{0,10}|0[0-9]{1,2}", fullmatch=True)
"""Object keys, with many that JavaScript treats as array indices (and some it does not)."""


def json_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """Any JSON document an emit can carry: integers within JavaScript's safe range."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5)
        ),
        max_leaves=max_leaves,
    )
