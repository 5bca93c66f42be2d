"""Push three messages, pop them, ack one alone and two as a batch, then pop again."""

from __future__ import annotations

from typing import Any

from compat_runtime import run, to_json

from queen import Queen


async def main(client: Queen, args: dict[str, Any]) -> Any:
    queue = args["queue"]
    payloads = args["payloads"]
    pushed = await client.queue(queue).push([{"data": p} for p in payloads])
    popped = await client.queue(queue).batch(len(payloads) + 5).wait(False).pop()
    single_ack = await client.ack(popped[0]) if popped else None
    batch_ack = await client.ack(popped[1:]) if len(popped) > 1 else None
    second_pop = await client.queue(queue).batch(10).wait(False).pop()
    return {
        "pushed": to_json(pushed),
        "popped": to_json(popped),
        "single_ack": to_json(single_ack),
        "batch_ack": to_json(batch_ack),
        "second_pop": to_json(second_pop),
    }


run(main)
