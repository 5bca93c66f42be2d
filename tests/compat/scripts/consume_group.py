"""Push N messages, consume them with a consumer group (auto-ack), then look at what is left.

Records the shape the handler was called with ("dict" or "list"), every message it saw, what the
same group can still pop afterwards, and what a second group sees (all of them, in order).
"""

from __future__ import annotations

import asyncio
from typing import Any

from compat_runtime import run, to_json

from queen import Queen


async def main(client: Queen, args: dict[str, Any]) -> Any:
    queue, group, count = args["queue"], args["group"], args["count"]
    await client.queue(queue).push([{"data": {"i": i}} for i in range(count)])

    calls: list[dict[str, Any]] = []

    async def handler(arg: Any) -> None:
        messages = arg if isinstance(arg, list) else [arg]
        calls.append(
            {
                "shape": "list" if isinstance(arg, list) else "dict",
                "messages": [
                    {"i": m["data"]["i"], "transactionId": m["transactionId"]} for m in messages
                ],
            }
        )

    consumer = client.queue(queue).group(group).limit(count).timeout_millis(2000)
    if args.get("batch"):
        consumer = consumer.batch(args["batch"])
    timed_out = False
    try:
        await asyncio.wait_for(consumer.consume(handler), args.get("consume_timeout_s", 30))
    except TimeoutError:
        timed_out = True

    leftover = await client.queue(queue).group(group).batch(count).wait(False).pop()
    other = await client.queue(queue).group(args["other_group"]).batch(count).wait(False).pop()
    return {
        "calls": calls,
        "timed_out": timed_out,
        "leftover": to_json(leftover),
        "other_group": [m["data"]["i"] for m in other],
    }


run(main)
