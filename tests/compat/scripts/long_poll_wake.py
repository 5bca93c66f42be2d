"""A pop(wait=True) parked before a push is answered with that message right after the push.

The pop is known to be parked when the server's /metrics counts it (`longPolls.parked`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from compat_runtime import run, to_json, wait_until

from queen import Queen


async def parked_polls(client: Queen) -> int:
    metrics = await client.admin.metrics()
    if isinstance(metrics, dict) and isinstance(metrics.get("longPolls"), dict):
        return int(metrics["longPolls"].get("parked", -1))
    return -1


async def main(client: Queen, args: dict[str, Any]) -> Any:
    queue, timeout_ms = args["queue"], args["timeout_ms"]
    baseline = await parked_polls(client)
    started = time.monotonic()
    waiter = asyncio.create_task(client.queue(queue).wait(True).timeout_millis(timeout_ms).pop())

    async def is_parked() -> bool:
        return await parked_polls(client) > baseline

    parked_seen = await wait_until(is_parked, 10.0)
    parked_for = time.monotonic() - started
    pushed_at = time.monotonic()
    pushed = await client.queue(queue).push([{"data": args["data"]}])
    messages = await waiter
    answered_after = time.monotonic() - pushed_at
    acked = await client.ack(messages[0]) if messages else None
    return {
        "baseline_parked": baseline,
        "parked_seen": parked_seen,
        "parked_for_s": parked_for,
        "answered_after_push_s": answered_after,
        "pushed": to_json(pushed),
        "messages": to_json(messages),
        "ack": to_json(acked),
    }


run(main)
