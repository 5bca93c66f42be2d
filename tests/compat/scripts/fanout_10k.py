"""Producers push into P partitions while C consumers pop and ack concurrently.

Each producer owns one partition and pushes its sequence numbers in order, in chunks. Each consumer
has its own client (its own connection pool) and loops pop(batch) + batch ack. Deliveries are
recorded in one list, in the order the pops returned: a partition is leased to one consumer at a
time and its next batch is only popped after the previous one was acked, so this order is the
delivery order per partition.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from compat_runtime import new_client, run

from queen import Queen


async def main(client: Queen, args: dict[str, Any]) -> Any:
    queue = args["queue"]
    partitions, per_partition = args["partitions"], args["per_partition"]
    consumers, batch, chunk = args["consumers"], args["batch"], args["chunk"]
    total = partitions * per_partition
    deadline = time.monotonic() + args["deadline_s"]

    deliveries: list[list[Any]] = []
    unique: set[tuple[int, int]] = set()
    ack_failures: list[Any] = []
    push_failures: list[Any] = []
    pops = [0] * consumers

    async def produce(p: int) -> None:
        for start in range(0, per_partition, chunk):
            items = [
                {"data": {"p": p, "seq": seq}}
                for seq in range(start, min(start + chunk, per_partition))
            ]
            results = await client.queue(queue).partition(f"p{p}").push(items)
            push_failures.extend(r for r in results if r.get("status") != "queued")

    async def consume(worker: int) -> None:
        own = new_client()
        try:
            while len(unique) < total and time.monotonic() < deadline:
                messages = await own.queue(queue).batch(batch).wait(True).timeout_millis(1000).pop()
                if not messages:
                    continue
                pops[worker] += 1
                for m in messages:
                    key = (m["data"]["p"], m["data"]["seq"])
                    unique.add(key)
                    deliveries.append([*key, m.get("partition"), worker])
                result = await own.ack(messages, True)
                items = result.get("results") if isinstance(result, dict) else None
                if not result.get("success") or any(
                    not i.get("success") for i in (items if isinstance(items, list) else [])
                ):
                    ack_failures.append(result)
        finally:
            await own.close()

    started = time.monotonic()
    await asyncio.gather(
        *(produce(p) for p in range(partitions)), *(consume(w) for w in range(consumers))
    )
    elapsed = time.monotonic() - started
    leftover = await client.queue(queue).batch(100).wait(False).pop()
    return {
        "total": total,
        "elapsed_s": elapsed,
        "deliveries": deliveries,
        "pops_per_consumer": pops,
        "ack_failures": ack_failures[:5],
        "ack_failure_count": len(ack_failures),
        "push_failures": push_failures[:5],
        "leftover": len(leftover),
    }


run(main)
