"""Identifiers that sort by creation time (ULID layout: 48-bit milliseconds + 80 random bits)."""

import os

from tidings.domain import clock

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, index = divmod(value, 32)
        chars.append(_CROCKFORD[index])
    return "".join(reversed(chars))


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """A globally unique id such as ``evt_01JH8ZK3Q4WB7T9M2XG5RVN6CD``."""
    millis = clock.now_ms() if now_ms is None else now_ms
    randomness = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(millis, 10)}{_encode(randomness, 16)}"
