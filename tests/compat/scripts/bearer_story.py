"""With a bearer token: push (an item also naming another producerSub, which must not count),
pop, ack, a transaction acking one message and pushing another, then pop what it pushed. Without
a token (QUEEN_BEARER_TOKEN unset), a push must fail with the server's refusal."""

from __future__ import annotations

import os
from typing import Any

from compat_runtime import run, to_json

from queen import Queen


async def main(client: Queen, args: dict[str, Any]) -> Any:
    queue, target = args["queue"], args["target"]
    if not os.environ.get("QUEEN_BEARER_TOKEN"):
        try:
            await client.queue(queue).push([{"data": {"anonymous": True}}])
        except Exception as error:
            return {"refused": to_json(error)}
        return {"refused": None}
    pushed = await client.queue(queue).push(
        [{"data": {"n": 1}, "producerSub": "mallory"}, {"data": {"n": 2}}]
    )
    popped = await client.queue(queue).batch(10).wait(True).timeout_millis(5000).pop()
    acked = await client.ack(popped[0]) if popped else None
    committed = None
    if len(popped) > 1:
        committed = await (
            client.transaction().ack(popped[1]).queue(target).push([{"data": {"n": 3}}]).commit()
        )
    moved = await client.queue(target).batch(10).wait(True).timeout_millis(5000).pop()
    return {
        "pushed": to_json(pushed),
        "popped": to_json(popped),
        "acked": to_json(acked),
        "committed": to_json(committed),
        "moved": to_json(moved),
    }


run(main)
