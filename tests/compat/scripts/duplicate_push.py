"""Push the same transactionId twice (in two requests, then twice in one request)."""

from __future__ import annotations

from typing import Any

from compat_runtime import run, to_json

from queen import Queen


async def main(client: Queen, args: dict[str, Any]) -> Any:
    queue, first_id, second_id = args["queue"], args["first_id"], args["second_id"]
    duplicates_seen: list[Any] = []

    async def on_duplicate(items: Any, error: Exception) -> None:
        duplicates_seen.append([item["transactionId"] for item in items])

    first = await client.queue(queue).push([{"transactionId": first_id, "data": {"v": 1}}])
    again = (
        await client.queue(queue)
        .push([{"transactionId": first_id, "data": {"v": 2}}])
        .on_duplicate(on_duplicate)
    )
    same_request = await client.queue(queue).push(
        [
            {"transactionId": second_id, "data": {"v": 3}},
            {"transactionId": second_id, "data": {"v": 4}},
        ]
    )
    stored = await client.queue(queue).batch(10).wait(False).pop()
    return {
        "first": to_json(first),
        "again": to_json(again),
        "duplicates_seen": duplicates_seen,
        "same_request": to_json(same_request),
        "stored": [m["data"] for m in stored],
    }


run(main)
