"""What the benchmark sends: one payload shape for the raw baseline and for every push, so the
ratio push ÷ baseline compares the same bytes going into PostgreSQL."""

from __future__ import annotations

import math
import uuid
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


def push_body(queue: str, partition: str, first: int, count: int) -> bytes:
    items = [
        {
            "queue": queue,
            "partition": partition,
            "payload": payload(first + i),
            "transactionId": str(uuid.uuid4()),
        }
        for i in range(count)
    ]
    return orjson.dumps({"items": items})


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank, so p99 is a latency some message really had rather than an interpolation."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
