"""Create a queue with options, namespace and task; return the answer as the client got it."""

from __future__ import annotations

from typing import Any

from compat_runtime import run

from queen import Queen


async def main(client: Queen, args: dict[str, Any]) -> Any:
    return (
        await client.queue(args["queue"])
        .namespace(args["namespace"])
        .task(args["task"])
        .config(args["options"])
        .create()
    )


run(main)
