"""Renew a lease on a queue with a 1 s leaseTime and show the partition stays leased past that.

Waiting past the original expiry is the point of the story (nothing observable happens when a lease
does not expire), so this script sleeps until then, measured from the pop.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from compat_runtime import run, to_json

from queen import Queen


def epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def main(client: Queen, args: dict[str, Any]) -> Any:
    queue, lease_s = args["queue"], args["lease_seconds"]
    await client.queue(queue).config({"lease_time": lease_s}).create()
    await client.queue(queue).push([{"data": {"renew": True}}])
    popped = await client.queue(queue).wait(False).pop()
    popped_at = time.time()
    if not popped:
        return {"popped": []}
    message = popped[0]

    renewed_at = time.time()
    renewed = await client.renew(message)
    await asyncio.sleep(max(0.0, popped_at + lease_s + 1.0 - time.time()))
    after_original_expiry = await client.queue(queue).wait(False).pop()
    acked = await client.ack(message)
    renewed_after_ack = await client.renew(message)

    return {
        "popped": to_json(popped),
        "popped_at": popped_at,
        "renewed_at": renewed_at,
        "renewed": to_json(renewed),
        "new_expiry_epoch": epoch(renewed.get("newExpiresAt")),
        "pop_after_original_expiry": to_json(after_original_expiry),
        "ack": to_json(acked),
        "renewed_after_ack": to_json(renewed_after_ack),
    }


run(main)
