"""Time-ordered identifiers (UUIDv7 layout with a monotonic counter): ids made in sequence by one
process sort strictly ascending, which keeps message ids in item order within a push and makes ids
readable as "roughly when"."""

from __future__ import annotations

import os
import time
import uuid

_COUNTER_BITS = 12 + 18  # rand_a (12 bits) plus the top 18 bits of rand_b act as a counter


class _MonotonicClock:
    """Millisecond timestamp plus a counter that never repeats or goes back within a process."""

    def __init__(self) -> None:
        self.last_ms = 0
        self.counter = 0

    def next(self) -> tuple[int, int]:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > self.last_ms:
            self.last_ms = now_ms
            self.counter = int.from_bytes(os.urandom(4), "big") & ((1 << (_COUNTER_BITS - 1)) - 1)
        else:
            self.counter += 1
            if self.counter >= 1 << _COUNTER_BITS:  # ~10^9 ids in one ms: borrow the next ms
                self.last_ms += 1
                self.counter = 0
        return self.last_ms, self.counter


_clock = _MonotonicClock()


def uuid7() -> uuid.UUID:
    millis, counter = _clock.next()
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (counter >> 18) << 64
    value |= 0b10 << 62
    value |= (counter & ((1 << 18) - 1)) << 44
    value |= int.from_bytes(os.urandom(6), "big") & ((1 << 44) - 1)
    return uuid.UUID(int=value)


def uuid7_str() -> str:
    return str(uuid7())
