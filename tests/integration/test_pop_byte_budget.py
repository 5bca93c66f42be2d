"""A pop hands back at most QUEEN_POP_MAX_BYTES of messages (issue #13).

PostgreSQL cannot build a jsonb value over 255 MB. A pop whose batch of large messages passed that
failed as a whole, answered empty (pops never answer 5xx), and failed again on every retry, since
the same messages stay first in line. These tests prove the budget with a budget of a few hundred
kilobytes instead of pushing 256 MB: the logic that stops at it is the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import trio_asyncio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, running_server

BUDGET = 350_000
# Each message counts its payload plus 1 KiB of envelope: three of these fit in BUDGET, four not.
PAYLOAD_CHARS = 100_000


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, QUEEN_POP_MAX_BYTES=str(BUDGET)) as process:
        yield process


def incompressible(n: int) -> dict[str, Any]:
    return {"n": n, "blob": os.urandom(PAYLOAD_CHARS // 2).hex()}


def compressible(n: int) -> dict[str, Any]:
    """Stored compressed in a few kilobytes: the budget must count what it becomes, not that."""
    return {"n": n, "blob": "x" * PAYLOAD_CHARS}


async def pop_all(api: Api, queue: str, batch: int) -> list[list[int]]:
    """Pop (auto-ack) until the queue is empty; the `n` of each pop's messages."""
    pops: list[list[int]] = []
    while (popped := await api.pop(queue, batch=batch, autoAck=True)) is not None:
        pops.append([m["data"]["n"] for m in popped["messages"]])
        assert len(pops) < 20, pops
    return pops


@pytest.mark.timeout(60)
@pytest.mark.parametrize("payload", [incompressible, compressible])
async def test_a_pop_stops_at_its_byte_budget_and_the_rest_follows(
    server: ServerProcess, payload: Any
) -> None:
    queue = unique("budget")
    async with Api(server.url) as api:
        await api.push(queue, [payload(n) for n in range(8)])
        assert await pop_all(api, queue, batch=8) == [[0, 1, 2], [3, 4, 5], [6, 7]]


@pytest.mark.timeout(60)
async def test_a_message_larger_than_the_budget_is_delivered_alone(server: ServerProcess) -> None:
    queue = unique("oversize")
    huge = {"n": 1, "blob": os.urandom(BUDGET).hex()}
    async with Api(server.url) as api:
        await api.push(queue, [{"n": 0}, huge, {"n": 2}])
        assert await pop_all(api, queue, batch=10) == [[0], [1], [2]]


@pytest.mark.timeout(60)
async def test_fused_pops_share_one_budget(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """One database call answers many pops in one value: the first takes what fits, one whose
    first message no longer fits gets nothing and takes no lease, and is served next time."""
    queue = unique("fused")
    async with Api(server.url) as api:
        await api.push(queue, [incompressible(n) for n in range(3)], partition="a")
        await api.push(queue, [incompressible(n) for n in range(2)], partition="b")
    requests = [
        {
            "queue": queue,
            "partition": partition,
            "group": "",
            "batch": 10,
            "partitions": 1,
            "autoAck": False,
            "subscriptionMode": "",
            "subscriptionFrom": "",
            "leaseId": f"lease-{partition}",
        }
        for partition in ("a", "b")
    ]
    async with trio_asyncio.open_loop():
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(
            **{**pg_cluster.dsn_parts(), "database": database},
            server_settings={"queen.pop_max_bytes": str(BUDGET)},
        )
        try:

            async def pop_requests() -> list[dict[str, Any]]:
                raw = await trio_asyncio.aio_as_trio(conn.fetchval)(
                    "SELECT queen.pop_requests($1::jsonb)::text", json.dumps(requests)
                )
                return json.loads(raw)  # type: ignore[no-any-return]

            async def leased() -> list[str]:
                rows = await trio_asyncio.aio_as_trio(conn.fetch)(
                    "SELECT p.name FROM queen.partition_consumers pc"
                    " JOIN queen.partitions p ON p.id = pc.partition_id"
                    " JOIN queen.queues q ON q.id = p.queue_id"
                    " WHERE q.name = $1 AND pc.worker_id IS NOT NULL ORDER BY p.name",
                    queue,
                )
                return [row["name"] for row in rows]

            first = await pop_requests()
            assert [len(result["messages"]) for result in first] == [3, 0]
            assert first[1] == {"messages": [], "partitionsClaimed": 0}
            assert "bytes" not in first[0] and "overBudget" not in first[0]
            assert await leased() == ["a"], "the pop left without budget holds nothing"

            second = await pop_requests()
            assert [len(result["messages"]) for result in second] == [0, 2]
            assert [m["data"]["n"] for m in second[1]["messages"]] == [0, 1]
        finally:
            await trio_asyncio.aio_as_trio(conn.close)()
