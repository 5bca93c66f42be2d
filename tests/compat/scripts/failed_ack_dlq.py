"""Nack a message by hand until it passes retryLimit, then read it back from the DLQ."""

from __future__ import annotations

from typing import Any

from compat_runtime import run, to_json

from queen import Queen


async def main(client: Queen, args: dict[str, Any]) -> Any:
    queue, retry_limit = args["queue"], args["retry_limit"]
    await client.queue(queue).config({"retry_limit": retry_limit}).create()
    await client.queue(queue).push(
        [{"transactionId": args["transaction_id"], "data": args["data"]}]
    )

    deliveries: list[dict[str, Any]] = []
    for attempt in range(retry_limit + 3):
        popped = await client.queue(queue).wait(True).timeout_millis(3000).pop()
        if not popped:
            break
        message = popped[0]
        nack = await client.ack(message, False, {"error": f"boom {attempt}"})
        deliveries.append({"message": to_json(message), "nack": to_json(nack)})
        if len(deliveries) > retry_limit:
            break

    after = await client.queue(queue).batch(10).wait(False).pop()
    dlq = await client.queue(queue).dlq().get()
    return {"deliveries": deliveries, "after": to_json(after), "dlq": to_json(dlq)}


run(main)
