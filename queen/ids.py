"""Time-ordered identifiers (UUIDv7 layout with a monotonic counter): ids made in sequence by one
process sort strictly ascending, which keeps message ids in item order within a push and makes ids
readable as "roughly when".

Ids are built as text directly: a 1000-message push needs 1000 of them, and going through
`uuid.UUID` objects cost more than validating the push itself."""

from __future__ import annotations

import os
import time

_COUNTER_BITS = 12 + 18  # rand_a (12 bits) plus the top 18 bits of rand_b act as a counter
_COUNTER_LIMIT = 1 << _COUNTER_BITS
_RANDOM_BYTES = 6  # 44 random bits are kept of each 48
_HEX_DIGITS = "0123456789abcdef"


class _MonotonicClock:
    """Millisecond timestamp plus a counter that never repeats or goes back within a process."""

    def __init__(self) -> None:
        self.last_ms = 0
        self.counter = 0

    def reserve(self, count: int) -> tuple[int, int]:
        """`count` consecutive counter values in one millisecond: (millis, first counter)."""
        now_ms = time.time_ns() // 1_000_000
        if now_ms > self.last_ms:
            self.last_ms = now_ms
            # A random start (below half the range) so ids of different processes interleave
            # rather than collide, with room left for at least 2^29 more in this millisecond.
            first = int.from_bytes(os.urandom(4), "big") & ((_COUNTER_LIMIT >> 1) - 1)
        else:
            first = self.counter + 1
        if first + count > _COUNTER_LIMIT:  # ~10^9 ids in one ms: borrow the next ms
            self.last_ms += 1
            first = 0
        self.counter = first + count - 1
        return self.last_ms, first


_clock = _MonotonicClock()


def uuid7_strs(count: int) -> list[str]:
    """`count` ascending ids in canonical text form. Within one call only the counter and the
    random bits differ, and sixteen consecutive counter values share every field but the last
    hex digit before the random ones: each group of sixteen is formatted once, and each id
    appends its digit and slices its random hex digits out of one string."""
    if count <= 0:
        return []
    millis, first = _clock.reserve(count)
    stamp = f"{millis & ((1 << 48) - 1):012x}"
    head = f"{stamp[:8]}-{stamp[8:]}-7"
    noise = os.urandom(_RANDOM_BYTES * count).hex()
    ids: list[str] = []
    counter, end, start = first, first + count, 1
    while counter < end:
        group_end = min(end, (counter | 0xF) + 1)
        # rand_a: the counter's top 12 bits; rand_b: variant 0b10, the low 18 counter bits (the
        # last 4 of them the digit each id appends), then 44 random bits (11 hex digits).
        group = f"{head}{counter >> 18:03x}-{0x8000 | ((counter & 0x3FFFF) >> 4):04x}-"
        for value in range(counter, group_end):
            ids.append(group + _HEX_DIGITS[value & 0xF] + noise[start : start + 11])
            start += 2 * _RANDOM_BYTES
        counter = group_end
    return ids


def uuid7_str() -> str:
    return uuid7_strs(1)[0]
