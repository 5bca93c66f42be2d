"""A consume() handler that always raises: the client nacks, the server retries, then DLQs it."""

from __future__ import annotations

import asyncio
from typing import Any

from compat_runtime import run, to_json

from queen import Queen


async def main(client: Queen, args: dict[str, Any]) -> Any:
    queue, retry_limit = args["queue"], args["retry_limit"]
    await client.queue(queue).config({"retry_limit": retry_limit}).create()
    await client.queue(queue).push([{"data": {"doomed": True}}])

    calls: list[Any] = []

    async def handler(arg: Any) -> None:
        messages = arg if isinstance(arg, list) else [arg]
        calls.append([m["transactionId"] for m in messages])
        raise RuntimeError(args["error"])

    consumer = client.queue(queue).limit(retry_limit + 1).timeout_millis(2000)
    timed_out = False
    try:
        await asyncio.wait_for(consumer.consume(handler), 30)
    except TimeoutError:
        timed_out = True

    after = await client.queue(queue).batch(10).wait(False).pop()
    dlq = await client.queue(queue).dlq().get()
    return {"calls": calls, "timed_out": timed_out, "after": to_json(after), "dlq": to_json(dlq)}


run(main)
