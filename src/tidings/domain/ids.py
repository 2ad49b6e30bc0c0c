"""Identifiers that sort by creation time (ULID layout: 48-bit milliseconds + 80 random bits).

Within one process they are monotonic, as ULID's spec allows: an id made in the same
millisecond as the previous one (or while the clock stepped back) takes the previous
one's time and its random part plus one, so two ids made in a row always sort in order.
"""

import os
import threading

from tidings.domain import clock

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = (0, 0)


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_CROCKFORD[index])
    return "".join(reversed(chars))


def _next(millis: int) -> tuple[int, int]:
    global _last
    with _lock:
        last_ms, last_random = _last
        if millis <= last_ms and last_random + 1 < 1 << _RANDOM_BITS:
            _last = (last_ms, last_random + 1)
        else:
            _last = (millis, int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big") >> 1)
        return _last


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """A globally unique id such as ``evt_01JH8ZK3Q4WB7T9M2XG5RVN6CD``."""
    millis, randomness = _next(clock.now_ms() if now_ms is None else now_ms)
    return f"{prefix}_{_encode(millis, 10)}{_encode(randomness, 16)}"
