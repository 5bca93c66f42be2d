"""What the benchmark sends: one payload shape for the raw baseline and for every push, so the
ratio push ÷ baseline compares the same bytes going into PostgreSQL."""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import orjson

_NOTE = "benchmark payload; shaped like a small order event a real producer would send"


def payload(n: int, **extra: Any) -> dict[str, Any]:
    """~200 bytes of JSON once serialised, the size class the targets were set for."""
    return {
        "orderId": n,
        "customer": f"customer-{n % 10_000:05d}",
        "amount": round((n % 100_000) / 100, 2),
        "currency": "EUR",
        "lines": [{"sku": f"SKU-{n % 997:04d}", "qty": 1 + n % 5}],
        "note": _NOTE,
        **extra,
    }


def payload_text(n: int) -> str:
    return orjson.dumps(payload(n)).decode()


PAYLOAD_BYTES = len(payload_text(123_456))


# Distinct payloads the push phases cycle through, as many as the baseline's pre-built batches hold
# (8 x 1000), so both put the same mix of bytes into PostgreSQL.
PAYLOAD_CYCLE = 8_000


@functools.cache
def _payload_cycle() -> tuple[bytes, ...]:
    return tuple(orjson.dumps(payload(n)) for n in range(PAYLOAD_CYCLE))


def push_body(queue: str, partition: str, first: int, count: int) -> bytes:
    """A push request body, assembled from pre-serialised payloads with a fresh random
    transactionId per item (random like the official client's default uuid4, so the server's
    duplicate index sees the same scattered inserts). Building each item as a dict and
    serialising it cost the generator ~4.3 ms per 1000-item body, a sixth of the machine at
    push@1000; this costs a tenth of that, and the baseline's generator pre-builds its batches
    the same way."""
    texts = _payload_cycle()
    head = orjson.dumps({"queue": queue, "partition": partition})[:-1] + b',"transactionId":"'
    noise = os.urandom(16 * count).hex().encode()
    items = []
    for i in range(count):
        h = noise[32 * i : 32 * i + 32]
        transaction_id = b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))
        text = texts[(first + i) % PAYLOAD_CYCLE]
        items.append(head + transaction_id + b'","payload":' + text + b"}")
    return b'{"items":[' + b",".join(items) + b"]}"


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank, so p99 is a latency some message really had rather than an interpolation."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
