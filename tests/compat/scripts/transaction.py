"""Pop from one queue, then ack it and push to another queue in one transaction.

Also commits a transaction whose ack names a message that does not exist, with a push beside it:
it must fail as a whole, so its push must not appear.
"""

from __future__ import annotations

from typing import Any

from compat_runtime import run, to_json

from queen import Queen


async def main(client: Queen, args: dict[str, Any]) -> Any:
    source, target, ghost = args["source"], args["target"], args["ghost"]
    await client.queue(source).push([{"data": {"step": 1}}])
    popped = await client.queue(source).wait(True).timeout_millis(5000).pop()
    if not popped:
        return {"popped": []}
    message = popped[0]

    committed = await (
        client.transaction()
        .ack(message)
        .queue(target)
        .push([{"data": {"step": 2, "after": message["transactionId"]}}])
        .commit()
    )
    source_after = await client.queue(source).batch(10).wait(False).pop()
    target_after = await client.queue(target).batch(10).wait(False).pop()

    failed: Any = None
    try:
        failed = await (
            client.transaction()
            .ack({"transactionId": "no-such-message", "partitionId": message["partitionId"]})
            .queue(ghost)
            .push([{"data": {"must": "not exist"}}])
            .commit()
        )
    except Exception as error:
        failed = error
    ghost_after = await client.queue(ghost).batch(10).wait(False).pop()

    return {
        "popped": to_json(popped),
        "committed": to_json(committed),
        "source_after": to_json(source_after),
        "target_after": to_json(target_after),
        "failed": to_json(failed),
        "ghost_after": to_json(ghost_after),
    }


run(main)
