"""Subscription filters: MongoDB-style conditions on dotted paths of the envelope.

A filter is a JSON object of ``path: condition`` pairs, all of which must hold::

    {"payload.amount.amount": {"$gte": 1000}, "payload.method": {"$in": ["card"]}}

A condition is a bare value (``$eq``) or an object of operators, all of which must hold:
``$eq $ne $gt $gte $lt $lte $in $nin $exists $regex`` (with ``$options``: ``i m s``) and
``$not`` (a condition). At the top level, and inside ``$and``/``$or``/``$not``, a filter
may also use ``$and: [filter, ...]``, ``$or: [filter, ...]`` and ``$not: filter``.

The semantics kept from MongoDB:

* A path walks objects; through an array it walks every element that is an object (a
  numeric part indexes the array instead). A value that is an array at the end of the
  path is matched as a whole and element by element: ``{"tags": "vip"}`` matches
  ``{"tags": ["new", "vip"]}``; ``$gt``/``$in``/``$regex`` match if any element does.
* A missing path matches ``$exists: false``, ``$ne``, ``$nin``, ``$not`` (of something
  that needs a value) and ``$eq: null`` (as MongoDB: null or missing); nothing else.
* Comparisons never cross types: ``$gt: 5`` matches numbers only, ``$gt: "m"`` strings
  only; any other value compares false, never raises. Integers equal floats (``1 ==
  1.0``); booleans are not numbers (``true`` does not equal ``1``).
* ``$regex`` runs on google-re2 (linear time: no pattern can backtrack catastrophically),
  on strings only.

``compile_filter`` validates a filter (``InvalidFilter`` names the place and the operator)
and compiles it once into nested closures; the predicate takes the envelope as parsed JSON
and never raises on any JSON value. ``FilterBook`` is one tenant's filtered subscriptions,
for the fan-out: it runs each distinct filter once per event, on a ``View`` that resolves
each path once for all of them (``stored_check`` compiles a stored filter once per
process, sharing what filters have in common).
"""

from __future__ import annotations

import functools
import json
import math
import operator
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from tidings.domain.events import EventPattern

MAX_FILTER_CHARS = 8192
"""Compact JSON of one filter."""
MAX_CONDITIONS = 100
"""Field conditions and operators in one filter."""
MAX_NESTING = 8
"""``$and``/``$or``/``$not`` inside one another."""
MAX_PATH_CHARS = 256
MAX_PATH_PARTS = 16
MAX_LIST = 256
"""Values of one ``$in``/``$nin``, branches of one ``$and``/``$or``."""
MAX_REGEX_CHARS = 512
REGEX_MEMORY = 1 << 20
"""Bytes RE2 may use for one compiled pattern (its default is 8 MiB)."""
COMPILED_CACHE = 65_536
"""Distinct stored filters kept compiled (one per filtered subscription, at most)."""

Predicate = Callable[[Any], bool]
"""A compiled filter: the envelope (parsed JSON) -> whether it matches."""
Check = Callable[["View"], bool]
"""A compiled filter as the fan-out runs it: on a ``View`` of the envelope."""
_Test = Callable[[Any], bool]
"""A compiled condition: what a path resolved to -> whether it holds."""

COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
FIELD_OPERATORS = ("$eq", "$ne", *COMPARISONS, "$in", "$nin", "$exists", "$regex", "$not")
LOGICAL_OPERATORS = ("$and", "$or", "$not")
REGEX_OPTIONS = "ims"


class InvalidFilter(ValueError):
    """A filter refused on save: ``field`` is where (``filter.payload.amount``),
    ``operator`` the operator at fault (None when the problem is the shape)."""

    def __init__(self, field: str, operator: str | None, problem: str) -> None:
        place = f"{field}: {operator}" if operator else field
        super().__init__(f"{place}: {problem}")
        self.field = field
        self.operator = operator


class _Missing:
    """What a path resolves to when nothing is there."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Many(list[Any]):
    """What a path resolves to when it yields several values (arrays on the way, or an
    array at the end: the array itself, then each element)."""

    __slots__ = ()


_UNSEEN: Any = object()


class View:
    """One envelope as filters see it: each path is resolved once, whichever of the many
    filters of a fan-out asks for it first (10,000 filters on ``payload.amount`` resolve
    it once per event, not 10,000 times)."""

    __slots__ = ("doc", "seen")

    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self.seen: dict[str, Any] = {}


# --- validation and compilation ---------------------------------------------------------


def filter_text(spec: Mapping[str, Any]) -> str:
    """The stored form of a filter: compact JSON, keys in the order given."""
    return json.dumps(spec, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def checked_filter(raw: Any) -> tuple[dict[str, Any], str] | None:
    """Validate ``raw`` for saving; returns it and its stored text, or None for an empty
    filter (``{}`` matches every event: it is no filter). Raises ``InvalidFilter``."""
    if not isinstance(raw, dict):
        raise InvalidFilter("filter", None, "must be a JSON object of paths and conditions")
    if not raw:
        return None
    try:
        text = filter_text(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidFilter("filter", None, "must be JSON (finite numbers only)") from exc
    if len(text) > MAX_FILTER_CHARS:
        raise InvalidFilter("filter", None, f"at most {MAX_FILTER_CHARS} characters as JSON")
    if not _encodable(text):  # a lone surrogate (NUL is escaped, so storable)
        raise InvalidFilter("filter", None, "text must be valid Unicode")
    compile_filter(raw)
    return raw, text


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def compile_filter(spec: Any) -> Predicate:
    """The filter as a predicate on the envelope; ``InvalidFilter`` if it is not valid."""
    check = compile_check(spec)
    return lambda doc: check(View(doc))


def compile_check(spec: Any) -> Check:
    """The filter as the fan-out runs it, on a ``View``; ``InvalidFilter`` if not valid."""
    return _Compiler().document(spec, "filter", 0)


@functools.lru_cache(maxsize=COMPILED_CACHE)
def stored_check(text: str) -> Check:
    """A stored filter, compiled once per distinct text (the cache is thread-safe: the
    fan-out runs on the event loop and on SQLite's writer thread). A stored filter that
    today's rules refuse matches nothing: a filter promises the receiver no other events."""
    try:
        return compile_check(json.loads(text))
    except (InvalidFilter, ValueError):
        return _nothing


def _nothing(_: View) -> bool:
    return False


def forget_compiled() -> None:
    """Drop every compiled filter this process keeps (what a fresh process starts with):
    for benchmarks of the first compile."""
    stored_check.cache_clear()
    _SHARED_FIELDS.clear()
    _resolver.cache_clear()


class _Compiler:
    def __init__(self) -> None:
        self.conditions = 0

    def count(self, where: str) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise InvalidFilter(where, None, f"at most {MAX_CONDITIONS} conditions per filter")

    def document(self, spec: Any, where: str, nesting: int) -> Check:
        if not isinstance(spec, dict):
            raise InvalidFilter(where, None, "must be a JSON object of paths and conditions")
        parts: list[Check] = []
        for key, value in spec.items():
            if key.startswith("$"):
                parts.append(self.logical(key, value, where, nesting))
            else:
                parts.append(self.field(key, value, f"{where}.{key}", nesting))
        return _all_of(parts)

    def field(self, path: str, cond: Any, where: str, nesting: int) -> Check:
        """One path's check. Many filters share conditions (``"payload.method": "card"``),
        so a check is kept by its path and condition text and shared: fewer objects to
        hold and for the garbage collector to walk, and a ``View`` already answers it."""
        try:
            key = (path, json.dumps(cond, allow_nan=False), nesting)  # true is not 1
            shared = _SHARED_FIELDS.get(key)
        except (TypeError, ValueError, RecursionError):  # not JSON: refused below
            key, shared = None, None
        if shared is not None:
            check, conditions = shared
            for _ in range(conditions):
                self.count(where)
            return check
        before = self.conditions
        self.count(where)
        check = _on_path(path, _checked_path(path, where), self.condition(cond, where, nesting))
        if key is not None:
            _SHARED_FIELDS.put(key, (check, self.conditions - before))
        return check

    def logical(self, op: str, value: Any, where: str, nesting: int) -> Check:
        self.count(where)
        if op not in LOGICAL_OPERATORS:
            if op in FIELD_OPERATORS:
                problem = f'applies to a path: write {{"path": {{"{op}": ...}}}}'
            else:
                problem = "unknown operator; a filter combines paths with $and, $or and $not"
            raise InvalidFilter(where, op, problem)
        if nesting >= MAX_NESTING:
            raise InvalidFilter(where, op, f"nested more than {MAX_NESTING} levels")
        if op == "$not":
            inner = self.document(value, f"{where}.$not", nesting + 1)
            return lambda doc: not inner(doc)
        if not isinstance(value, list) or not value:
            raise InvalidFilter(where, op, "needs a non-empty array of filters")
        if len(value) > MAX_LIST:
            raise InvalidFilter(where, op, f"at most {MAX_LIST} filters")
        branches = [
            self.document(branch, f"{where}.{op}[{n}]", nesting + 1)
            for n, branch in enumerate(value)
        ]
        return _all_of(branches) if op == "$and" else _any_of(branches)

    def condition(self, cond: Any, where: str, nesting: int) -> _Test:
        """A bare value (equality) or an object of operators, all of which must hold."""
        if not (isinstance(cond, dict) and _has_operator(cond)):
            equal = _equal_to(cond, where, "$eq")
            return _matching_any(equal, on_missing=cond is None, plain=_plain_equality(cond))
        if not all(k.startswith("$") for k in cond):
            raise InvalidFilter(
                where,
                None,
                'mixes operators and fields: compare with an object as {"$eq": {...}}',
            )
        if "$options" in cond and "$regex" not in cond:
            raise InvalidFilter(where, "$options", "only goes with $regex")
        tests = [
            self.operator(op, arg, where, nesting, cond)
            for op, arg in cond.items()
            if op != "$options"
        ]
        return _all_of(tests)

    def operator(
        self, op: str, arg: Any, where: str, nesting: int, cond: Mapping[str, Any]
    ) -> _Test:
        self.count(where)
        if op == "$eq":
            equal = _equal_to(arg, where, op)
            return _matching_any(equal, on_missing=arg is None, plain=_plain_equality(arg))
        if op == "$ne":
            equal = _matching_any(_equal_to(arg, where, op), on_missing=arg is None)
            return lambda found: not equal(found)
        if op in COMPARISONS:
            kinds = NUMBERS if _is_number(arg) else (str,)
            plain = (kinds, COMPARE[op], arg)
            return _matching_any(_comparison(op, arg, where), on_missing=False, plain=plain)
        if op in ("$in", "$nin"):
            member, has_null = _membership(op, arg, where)
            within = _matching_any(member, on_missing=has_null)
            return within if op == "$in" else lambda found: not within(found)
        if op == "$exists":
            if not isinstance(arg, bool):
                raise InvalidFilter(where, op, "needs true or false")
            return (lambda found: found is not MISSING) if arg else (lambda found: found is MISSING)
        if op == "$regex":
            return _matching_any(_regex(arg, cond.get("$options", ""), where), on_missing=False)
        if op == "$not":
            if nesting >= MAX_NESTING:
                raise InvalidFilter(where, op, f"nested more than {MAX_NESTING} levels")
            inner = self.condition(arg, where, nesting + 1)
            return lambda found: not inner(found)
        hint = " (it combines filters: put it above the path)" if op in ("$and", "$or") else ""
        known = ", ".join(FIELD_OPERATORS)
        raise InvalidFilter(where, op, f"unknown operator{hint}; a path takes {known}")


def _has_operator(cond: dict[str, Any]) -> bool:
    for key in cond:  # noqa: SIM110 - no generator: compiling 10,000 filters adds up
        if key.startswith("$"):
            return True
    return False


def _checked_path(path: str, where: str) -> tuple[str, ...]:
    if len(path) > MAX_PATH_CHARS:
        raise InvalidFilter(
            where[:MAX_PATH_CHARS], None, f"paths are at most {MAX_PATH_CHARS} characters"
        )
    parts = tuple(path.split("."))
    if any(not part for part in parts):
        raise InvalidFilter(where, None, "a path is dot-separated names, none empty")
    if len(parts) > MAX_PATH_PARTS:
        raise InvalidFilter(where, None, f"paths have at most {MAX_PATH_PARTS} parts")
    return parts


def _all_of(parts: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if not parts:
        return lambda _: True
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda x: first(x) and second(x)
    every = tuple(parts)

    def all_hold(x: Any) -> bool:
        for part in every:  # noqa: SIM110 - no generator per call: the fan-out's hot path
            if not part(x):
                return False
        return True

    return all_hold


def _any_of(parts: Sequence[Check]) -> Check:
    if len(parts) == 1:
        return parts[0]
    some = tuple(parts)

    def one_holds(x: Any) -> bool:
        for part in some:  # noqa: SIM110 - as above
            if part(x):
                return True
        return False

    return one_holds


class _AnyValue:
    """A condition that holds if any value the path resolved to passes ``candidate``
    (``on_missing`` if it resolved to nothing): ``_on_path`` fuses it into one closure."""

    __slots__ = ("candidate", "on_missing", "plain")

    def __init__(
        self, candidate: Callable[[Any], bool], on_missing: bool, plain: _Plain | None = None
    ) -> None:
        self.candidate = candidate
        self.on_missing = on_missing
        self.plain = plain
        """The common case answered without calling ``candidate``: a value of one of
        these types, compared with the operand by this (C) function."""

    def __call__(self, found: Any) -> bool:
        if found is MISSING:
            return self.on_missing
        if type(found) is _Many:
            for value in found:  # noqa: SIM110 - as in _all_of
                if self.candidate(value):
                    return True
            return False
        return self.candidate(found)


_Plain = tuple[tuple[type, ...], Callable[[Any, Any], bool], Any]
NUMBERS = (int, float)
COMPARE = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def _matching_any(
    candidate: Callable[[Any], bool], *, on_missing: bool, plain: _Plain | None = None
) -> _Test:
    return _AnyValue(candidate, on_missing, plain)


def _plain_equality(expected: Any) -> _Plain | None:
    if type(expected) is str:
        return (str,), operator.eq, expected
    if _is_number(expected):
        return NUMBERS, operator.eq, expected
    return None


def _on_path(path: str, parts: tuple[str, ...], test: _Test) -> Check:
    """The check of one path's condition. The path is resolved once per ``View``; the
    common condition (one operator, any value) is one closure with the lookup."""
    resolve = _resolver(parts)
    if type(test) is not _AnyValue:

        def check(view: View) -> bool:
            seen = view.seen
            found = seen.get(path, _UNSEEN)
            if found is _UNSEEN:
                found = seen[path] = resolve(view.doc)
            return test(found)

        return check
    candidate, on_missing = test.candidate, test.on_missing
    if test.plain is not None:
        kinds, compare, operand = test.plain

        def check_plain(view: View) -> bool:
            seen = view.seen
            found = seen.get(path, _UNSEEN)
            if found is _UNSEEN:
                found = seen[path] = resolve(view.doc)
            if type(found) in kinds:
                return bool(compare(found, operand))
            if found is MISSING:
                return on_missing
            return test(found)  # many values, or one of another type

        return check_plain

    def check_any(view: View) -> bool:
        seen = view.seen
        found = seen.get(path, _UNSEEN)
        if found is _UNSEEN:
            found = seen[path] = resolve(view.doc)
        if found is MISSING:
            return on_missing
        if type(found) is _Many:
            for value in found:  # noqa: SIM110 - as in _all_of
                if candidate(value):
                    return True
            return False
        return candidate(found)

    return check_any


# --- paths ------------------------------------------------------------------------------


class _SharedChecks:
    """A bounded map, safe across threads, of compiled path checks by what they check."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: dict[Any, tuple[Check, int]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> tuple[Check, int] | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: Any, value: tuple[Check, int]) -> None:
        with self._lock:
            if len(self._items) >= self._size:
                self._items.clear()  # compiled checks stay valid where they are used
            self._items[key] = value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_SHARED_FIELDS = _SharedChecks(COMPILED_CACHE)


@functools.lru_cache(maxsize=COMPILED_CACHE)
def _resolver(parts: tuple[str, ...]) -> Callable[[Any], Any]:
    """A function of the document: the value at the path, ``MISSING``, or ``_Many``.

    The common case (objects all the way) is a loop of ``dict.get``; arrays on the way
    take the general walk."""
    if len(parts) == 1:
        (key,) = parts

        def resolve_one(doc: Any) -> Any:
            if type(doc) is dict:
                value = doc.get(key, MISSING)
                return _Many([value, *value]) if type(value) is list else value
            return _walk(doc, parts, 0)

        return resolve_one

    def resolve(doc: Any) -> Any:
        value = doc
        for key in parts:
            if type(value) is not dict:
                return _walk(doc, parts, 0)
            value = value.get(key, MISSING)
            if value is MISSING:
                return MISSING
        return _Many([value, *value]) if type(value) is list else value

    return resolve


def _walk(value: Any, parts: tuple[str, ...], start: int) -> Any:
    found: list[Any] = []
    _collect(value, parts, start, found)
    if not found:
        return MISSING
    if len(found) == 1 and type(found[0]) is not list:
        return found[0]
    return _Many(found)


def _collect(value: Any, parts: tuple[str, ...], n: int, found: list[Any]) -> None:
    if n == len(parts):
        found.append(value)
        if type(value) is list:
            found.extend(value)
        return
    key = parts[n]
    if type(value) is dict:
        if key in value:
            _collect(value[key], parts, n + 1, found)
    elif type(value) is list:
        if key.isdigit() and key.isascii():
            index = int(key)
            if index < len(value):
                _collect(value[index], parts, n + 1, found)
        else:
            for element in value:
                if type(element) is dict and key in element:
                    _collect(element[key], parts, n + 1, found)


# --- value tests ------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float


def _checked_value(value: Any, where: str, op: str, depth: int = 0) -> None:
    """A JSON value (finite numbers only)."""
    if depth > MAX_NESTING * 2:
        raise InvalidFilter(where, op, "value nested too deep")
    if value is None or isinstance(value, bool | str | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilter(where, op, "numbers must be finite")
        return
    if isinstance(value, list):
        for item in value:
            _checked_value(item, where, op, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidFilter(where, op, "object keys must be strings")
            _checked_value(item, where, op, depth + 1)
        return
    raise InvalidFilter(where, op, f"not a JSON value: {type(value).__name__}")


def _equal_to(expected: Any, where: str, op: str) -> Callable[[Any], bool]:
    _checked_value(expected, where, op)
    if expected is None:
        return lambda value: value is None
    if expected is True:
        return lambda value: value is True
    if expected is False:
        return lambda value: value is False
    if _is_number(expected):
        return lambda value: (type(value) is int or type(value) is float) and value == expected
    if type(expected) is str:
        return lambda value: type(value) is str and value == expected
    return lambda value: json_equal(value, expected)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0``, ``true != 1``, objects regardless of order."""
    if _is_number(a):
        return _is_number(b) and a == b
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is list:
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind is dict:
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _comparison(op: str, bound: Any, where: str) -> Callable[[Any], bool]:
    if _is_number(bound):
        _checked_value(bound, where, op)
        if op == "$gt":
            return lambda v: (type(v) is int or type(v) is float) and v > bound
        if op == "$gte":
            return lambda v: (type(v) is int or type(v) is float) and v >= bound
        if op == "$lt":
            return lambda v: (type(v) is int or type(v) is float) and v < bound
        return lambda v: (type(v) is int or type(v) is float) and v <= bound
    if type(bound) is str:
        if op == "$gt":
            return lambda v: type(v) is str and v > bound
        if op == "$gte":
            return lambda v: type(v) is str and v >= bound
        if op == "$lt":
            return lambda v: type(v) is str and v < bound
        return lambda v: type(v) is str and v <= bound
    raise InvalidFilter(where, op, "needs a number or a string")


def _membership(op: str, values: Any, where: str) -> tuple[Callable[[Any], bool], bool]:
    """A test of one value against ``$in``'s list, and whether the list holds null."""
    if not isinstance(values, list):
        raise InvalidFilter(where, op, "needs an array of values")
    if len(values) > MAX_LIST:
        raise InvalidFilter(where, op, f"at most {MAX_LIST} values")
    _checked_value(values, where, op)
    strings = frozenset(v for v in values if type(v) is str)
    numbers = frozenset(v for v in values if _is_number(v))
    booleans = frozenset(v for v in values if type(v) is bool)
    has_null = any(v is None for v in values)
    nested = tuple(v for v in values if type(v) in (list, dict))

    def member(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            return value in strings
        if kind is int or kind is float:
            return value in numbers
        if kind is bool:
            return value in booleans
        if value is None:
            return has_null
        return any(json_equal(value, n) for n in nested)

    return member, has_null


def _regex(pattern: Any, options: Any, where: str) -> Callable[[Any], bool]:
    if not isinstance(pattern, str):
        raise InvalidFilter(where, "$regex", "needs a string")
    if len(pattern) > MAX_REGEX_CHARS:
        raise InvalidFilter(where, "$regex", f"patterns are at most {MAX_REGEX_CHARS} characters")
    if not isinstance(options, str) or any(o not in REGEX_OPTIONS for o in options):
        raise InvalidFilter(where, "$options", f"letters among {', '.join(REGEX_OPTIONS)}")
    flags = "".join(sorted(set(options)))
    try:
        search = _re2_search((f"(?{flags})" if flags else "") + pattern)
    except re2.error as exc:
        raise InvalidFilter(where, "$regex", f"not a valid RE2 pattern ({_reason(exc)})") from exc
    return lambda value: type(value) is str and search(value)


def _reason(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text[:200]


def _re2_search(pattern: str) -> Callable[[str], bool]:
    """Whether ``pattern`` occurs in a string; RE2's linear-time engine, at most
    ``REGEX_MEMORY`` bytes. The binding's ``search`` builds match objects through a
    generator (~15 µs a call, measured); the compiled RE2 underneath it answers the same
    question in ~1.5 µs, so that is used when present (checked against ``search``)."""
    options = re2.Options()
    options.max_mem = REGEX_MEMORY
    options.log_errors = False
    options.never_capture = True
    compiled = re2.compile(pattern, options)
    raw = getattr(compiled, "_regexp", None)
    if raw is not None and _fast_search_works():
        anchor = _UNANCHORED

        def fast(text: str) -> bool:
            data = text.encode("utf-8", "surrogatepass")
            return bool(raw.Match(anchor, data, 0, len(data))[0][0] >= 0)

        return fast
    return lambda text: compiled.search(text) is not None


try:
    from re2 import _re2 as _binding

    _UNANCHORED: Any = _binding.RE2.Anchor.UNANCHORED
except (ImportError, AttributeError):  # pragma: no cover - another binding version
    _UNANCHORED = None


@functools.cache
def _fast_search_works() -> bool:
    if _UNANCHORED is None:
        return False
    try:
        options = re2.Options()
        options.log_errors = False
        probe = re2.compile("b+c", options)._regexp
        hit = probe.Match(_UNANCHORED, b"abbc", 0, 4)
        miss = probe.Match(_UNANCHORED, b"abd", 0, 3)
        return bool(hit[0][0] == 1 and miss[0][0] < 0)
    except Exception:  # pragma: no cover - the binding changed: use its public API
        return False


# --- one tenant's filtered subscriptions ------------------------------------------------


@dataclass(frozen=True)
class FilteredSubscription:
    id: str
    patterns: tuple[EventPattern, ...]
    check: Check

    def wants(self, event_type: str) -> bool:
        return any(p.matches(event_type) for p in self.patterns)

    @classmethod
    def stored(cls, sub_id: str, patterns: str, text: str) -> FilteredSubscription:
        """From the stored columns: ``event_types`` (a JSON array) and ``filter``."""
        return cls(sub_id, _patterns_of(patterns), stored_check(text))


@functools.lru_cache(maxsize=4096)
def _patterns_of(stored: str) -> tuple[EventPattern, ...]:
    """A stored ``event_types`` as patterns, once per distinct text (subscriptions share
    a few)."""
    return tuple(EventPattern(p) for p in json.loads(stored))


class FilterBook:
    """A tenant's filtered subscriptions as of one version of its filters (the version
    changes with every change to which of its subscriptions are filtered, and how)."""

    TYPES_KEPT = 256

    def __init__(self, version: int | None, subscriptions: Iterable[FilteredSubscription]) -> None:
        self.version = version
        self.subscriptions = tuple(subscriptions)
        self._by_type: dict[str, tuple[tuple[Check, tuple[str, ...]], ...]] = {}

    def wanting(self, event_type: str) -> tuple[tuple[Check, tuple[str, ...]], ...]:
        """The filters to run for ``event_type``, each once with the subscriptions that
        share it (the same text compiles to the same check), remembered per type."""
        found = self._by_type.get(event_type)
        if found is None:
            shared: dict[Check, list[str]] = {}
            for sub in self.subscriptions:
                if sub.wants(event_type):
                    shared.setdefault(sub.check, []).append(sub.id)
            found = tuple((check, tuple(ids)) for check, ids in shared.items())
            if len(self._by_type) >= self.TYPES_KEPT:
                self._by_type.clear()
            self._by_type[event_type] = found
        return found

    def matching(self, event_type: str, body: str) -> list[str]:
        """Ids of the filtered subscriptions that take this event (``body``: its envelope
        JSON, parsed only if some filtered subscription wants the type)."""
        wanting = self.wanting(event_type)
        if not wanting:
            return []
        view = View(json.loads(body))
        passed: list[str] = []
        for check, ids in wanting:
            if check(view):
                passed.extend(ids)
        return passed


def matches(spec: Mapping[str, Any] | None, envelope: Any) -> bool:
    """Whether an envelope passes a subscription's filter (None: no filter)."""
    return spec is None or stored_check(filter_text(spec))(View(envelope))
