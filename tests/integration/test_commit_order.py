"""Commit order is delivery order (quirk Q23).

Concurrent single-message pushes into ONE partition, with a live consumer popping and acking: every
acknowledged push must be delivered exactly once, and each producer's messages in the order it
pushed them. The C++ original loses some of these (a later-stamped push commits first, the cursor
passes it, the earlier one lands behind the cursor for good).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, running_server

PRODUCERS = 8
PER_PRODUCER = 100


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(
        pg_cluster, database, NUM_WORKERS="2", SIDECAR_MICRO_BATCH_WAIT_MS="0"
    ) as process:
        yield process


def check_exactly_once_in_order(
    acknowledged: set[tuple[int, int]], delivered: list[tuple[int, int]]
) -> None:
    duplicates = len(delivered) - len(set(delivered))
    lost = acknowledged - set(delivered)
    print(
        f"pushed+acknowledged={len(acknowledged)} delivered={len(delivered)} "
        f"duplicates={duplicates} lost={len(lost)}"
    )
    assert duplicates == 0
    assert not lost, f"{len(lost)} acknowledged pushes never delivered: {sorted(lost)[:10]}"
    for producer in {p for p, _ in acknowledged}:
        sequence = [n for p, n in delivered if p == producer]
        assert sequence == sorted(sequence), f"producer {producer} delivered out of order"


@pytest.mark.timeout(180)
async def test_concurrent_single_pushes_over_http_are_delivered_exactly_once_in_order(
    server: ServerProcess,
) -> None:
    queue = unique("order")
    acknowledged: set[tuple[int, int]] = set()
    delivered: list[tuple[int, int]] = []
    producers_done = trio.Event()

    async with Api(server.url) as api:

        async def producer(index: int) -> None:
            for n in range(PER_PRODUCER):
                result = await api.push(queue, [{"p": index, "n": n}], partition="one")
                assert result[0]["status"] == "queued"
                acknowledged.add((index, n))

        async def consumer() -> None:
            with trio.fail_after(150):
                while not producers_done.is_set() or len(delivered) < len(acknowledged):
                    popped = await api.pop(
                        queue, partition="one", wait=True, timeout=1000, batch=50
                    )
                    if popped is None:
                        continue
                    delivered.extend((m["data"]["p"], m["data"]["n"]) for m in popped["messages"])
                    results = await api.ack_batch(popped["messages"])
                    assert all(r["success"] for r in results)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            async with trio.open_nursery() as producers:
                for index in range(PRODUCERS):
                    producers.start_soon(producer, index)
            producers_done.set()

    assert len(acknowledged) == PRODUCERS * PER_PRODUCER
    check_exactly_once_in_order(acknowledged, delivered)


async def _stress_in_sql(
    dsn: dict[str, Any], queue: str, producers: int, per_producer: int
) -> tuple[set[tuple[int, int]], list[tuple[int, int]]]:
    """The same story one level down, without HTTP: many connections call queen.push_items at once
    while a consumer connection pops and acks through the procedures, as fast as they can."""
    acknowledged: set[tuple[int, int]] = set()
    delivered: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def producer(index: int) -> None:
        conn = await asyncpg.connect(**dsn)
        try:
            for n in range(per_producer):
                item = {
                    "queue": queue,
                    "partition": "one",
                    "payload": {"p": index, "n": n},
                    "transactionId": f"{index}-{n}",
                }
                await conn.fetchval("SELECT queen.push_items($1::jsonb)", json.dumps([item]))
                acknowledged.add((index, n))
        finally:
            await conn.close()

    async def consumer() -> None:
        conn = await asyncpg.connect(**dsn)
        try:
            while not done.is_set() or len(delivered) < len(acknowledged):
                request = {
                    "queue": queue,
                    "partition": "one",
                    "batch": 20,
                    "leaseId": str(uuid.uuid4()),
                }
                raw = await conn.fetchval(
                    "SELECT queen.pop_requests($1::jsonb)", json.dumps([request])
                )
                messages = json.loads(raw)[0]["messages"]
                if not messages:
                    await asyncio.sleep(0.001)
                    continue
                delivered.extend((m["data"]["p"], m["data"]["n"]) for m in messages)
                acks = [
                    {
                        "transactionId": m["transactionId"],
                        "partitionId": m["partitionId"],
                        "leaseId": m["leaseId"],
                        "status": "completed",
                    }
                    for m in messages
                ]
                raw = await conn.fetchval("SELECT queen.ack_items($1::jsonb)", json.dumps(acks))
                assert all(r["success"] for r in json.loads(raw))
        finally:
            await conn.close()

    consuming = asyncio.create_task(consumer())
    await asyncio.gather(*(producer(i) for i in range(producers)))
    done.set()
    await asyncio.wait_for(consuming, 120)
    return acknowledged, delivered


@pytest.mark.timeout(180)
def test_concurrent_pushes_in_sql_never_fall_behind_the_cursor(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """`server` is only needed for the schema it migrated into `database`."""
    dsn = {**pg_cluster.dsn_parts(), "database": database}
    acknowledged, delivered = asyncio.run(_stress_in_sql(dsn, unique("sql-order"), 16, 150))
    assert len(acknowledged) == 16 * 150
    check_exactly_once_in_order(acknowledged, delivered)
