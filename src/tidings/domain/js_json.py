"""JSON text exactly as JavaScript's ``JSON.stringify(JSON.parse(text))`` prints it.

Receivers that verify a re-serialized body (the GoHighLevel docs' examples parse the body,
stringify it again and check the signature over that) need our bytes to be the bytes
their JavaScript prints. ``json.dumps`` differs only in numbers: Python prints ``100.0``,
``1e-05`` and ``1e+16`` where JavaScript prints ``100``, ``0.00001`` and
``10000000000000000``; and in key order, since a JavaScript object lists keys that are
array indices (``"0"``, ``"7"``, …) first, in numeric order, then the others as they
came. Strings and separators already agree (compact separators, ``ensure_ascii=False``:
both escape only ``"``, ``\\`` and control characters, alike; JavaScript escapes lone
surrogates too, which a body cannot contain).

Integers beyond ±(2^53 - 1) do not survive ``JSON.parse`` (it reads every number as a
double), so no encoding can make them agree; :func:`first_unportable` finds them, and
NaN and the infinities, for emit to refuse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1
"""JavaScript's ``Number.MAX_SAFE_INTEGER``: larger integers lose digits in a double."""

UNSAFE_INTEGER = (
    f"is an integer beyond ±{MAX_SAFE_INTEGER} (2^53 - 1), which JavaScript cannot hold "
    "exactly: send it as a string"
)
NOT_FINITE = "is not a finite number (NaN or Infinity)"

_EXACT_INTEGRAL = float(2**53)
"""Below this every integral double prints in JavaScript as its exact integer."""
_ARRAY_INDEX_LIMIT = 2**32 - 1
"""Array indices are the canonical integer strings below this (ECMA-262, 6.1.7)."""


def js_number(value: float) -> str:
    """``value`` as ECMAScript's Number::toString prints it (ECMA-262, 6.1.6.1.20).

    The digits are the shortest that read back as ``value`` (choosing the nearest when
    several are as short), which are the digits of Python's ``repr``; only where they go
    differs: the integer form up to 1e21 (``100``, ``10000000000000000``), a plain
    fraction down to 1e-6 (``0.000001``), exponent form beyond (``1e-7``, ``1.5e+22``).
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).rstrip("0")
    stripped = digits.lstrip("0")
    # value = 0.<stripped> * 10^n, with k = len(stripped) significant digits
    n = len(whole) + int(exponent or 0) - (len(digits) - len(stripped))
    digits, k = stripped, len(stripped)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        power = n - 1
        exp = f"e{'+' if power >= 0 else '-'}{abs(power)}"
        text = (digits if k == 1 else f"{digits[0]}.{digits[1:]}") + exp
    return sign + text


def _key(key: Any) -> str:
    """A dict key as ``json.dumps`` writes it (apps may use ints), so both encoders agree."""
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        if math.isfinite(key):
            return float.__repr__(key)
        return "NaN" if math.isnan(key) else "Infinity" if key > 0 else "-Infinity"
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _is_array_index(key: str) -> bool:
    return (
        key.isdecimal()
        and key.isascii()
        and (key == "0" or key[0] != "0")
        and int(key) < _ARRAY_INDEX_LIMIT
    )


def _may_reorder(key: Any) -> bool:
    """Cheap: False for every key JavaScript keeps in place (a str that is not digits)."""
    return type(key) is not str or key.isdecimal()


def _js_key_order(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """``mapping`` with its keys as JavaScript lists them after ``JSON.parse``: array
    indices ascending, then the other keys in order (keys made text, as JSON has them;
    two that become the same text keep the first's place and the last's value, as
    ``JSON.parse`` does)."""
    indices: dict[str, Any] = {}
    named: dict[str, Any] = {}
    for key, item in mapping.items():
        text = _key(key)
        (indices if _is_array_index(text) else named)[text] = item
    return {key: indices[key] for key in sorted(indices, key=int)} | named


class _NeedsJavaScriptForm(Exception):
    """A float that ``json.dumps`` cannot print the way JavaScript does."""


def _c_printable(value: Any) -> Any:
    """``value`` with integral floats below 2^53 as ints and objects' keys in JavaScript's
    order, or _NeedsJavaScriptForm.

    Such an int prints as JavaScript prints the float. A non-integral float from 1e-4
    up prints alike in both (both plain, the same digits); every other float needs
    :func:`js_number`. Containers are copied only where something changed, and the
    commonest leaves (exactly str, int, bool, None) are skipped without a call: this
    runs on every envelope.
    """
    if isinstance(value, float):
        if value.is_integer():
            if -_EXACT_INTEGRAL < value < _EXACT_INTEGRAL:
                return int(value)
        elif 1e-4 <= abs(value) < 1e16:
            return value
        raise _NeedsJavaScriptForm
    if isinstance(value, dict):
        result = value
        if changes := _changed_items(value.items()):
            result = dict(value)
            result.update(changes)
        for key in value:
            if type(key) is not str or key.isdecimal():  # _may_reorder, inlined
                return _js_key_order(result)
        return result
    if isinstance(value, list | tuple):
        changes = _changed_items(enumerate(value))
        if changes is None:
            return value
        items = list(value)
        for index, new in changes:
            items[index] = new
        return items
    return value


def _changed_items(pairs: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]] | None:
    """The (key or index, printable form) of each item whose form differs, or None if
    none does. The commonest leaves (exactly str, int, bool, None) are skipped without a
    call."""
    changes = None
    for at, item in pairs:
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        new = _c_printable(item)
        if new is not item:
            if changes is None:
                changes = [(at, new)]
            else:
                changes.append((at, new))
    return changes


def _write(value: Any, out: list[str]) -> None:
    """The pure-Python encoder: ``json.dumps``'s output but JavaScript's numbers (and key
    order, as :func:`_c_printable` gives the C encoder)."""
    if isinstance(value, str):
        out.append(encode_basestring(value))  # what json.dumps(ensure_ascii=False) calls
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        # JSON.stringify writes NaN and the infinities as null (emit refuses them first)
        out.append(js_number(value) if math.isfinite(value) else "null")
    elif isinstance(value, dict):
        ordered = _js_key_order(value) if any(map(_may_reorder, value)) else value
        out.append("{")
        for index, (key, item) in enumerate(ordered.items()):
            if index:
                out.append(",")
            out.append(encode_basestring(key))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def compact_json(value: Any) -> str:
    """``value`` as compact JSON that ``JSON.stringify(JSON.parse(text))`` reprints unchanged
    (given integers within ±(2^53 - 1)).

    The C ``json.dumps`` encodes it when every float prints alike once integral ones are
    ints (almost every payload); only a float such as 1e-7 or 1e16 + 2 takes the
    pure-Python encoder.
    """
    try:
        printable = _c_printable(value)
    except _NeedsJavaScriptForm:
        out: list[str] = []
        _write(value, out)
        return "".join(out)
    return json.dumps(printable, separators=(",", ":"), ensure_ascii=False)


def _unportable(node: Any) -> tuple[list[Any], str] | None:
    """The keys (innermost first) to the first unportable number in ``node``, and why."""
    if isinstance(node, bool):
        return None
    if isinstance(node, int):
        return None if -MAX_SAFE_INTEGER <= node <= MAX_SAFE_INTEGER else ([], UNSAFE_INTEGER)
    if isinstance(node, float):
        return None if math.isfinite(node) else ([], NOT_FINITE)
    children: Iterable[tuple[Any, Any]]
    if isinstance(node, dict):
        children = node.items()
    elif isinstance(node, list | tuple):
        children = enumerate(node)
    else:
        return None
    for key, item in children:
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
            continue
        found = _unportable(item)
        if found is not None:
            found[0].append(key)
            return found
    return None


def first_unportable(value: Any, path: str) -> tuple[str, str] | None:
    """The dotted path (from ``path``) to the first number JavaScript cannot read back as
    it is, an integer beyond ±(2^53 - 1) or a non-finite float, and why; else None."""
    found = _unportable(value)
    if found is None:
        return None
    keys, reason = found
    return ".".join([path, *(str(key) for key in reversed(keys))]), reason
