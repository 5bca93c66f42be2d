"""Pushes create and lock partitions in one order (sql/functions/02_lock_order.sql).

The batcher lists a fused push's targets in arrival order, and two workers fusing single pushes
into the same brand-new partitions list them in different orders. `push_batch` created missing
partitions in that order: each transaction's unique-index check waited for the other's
uncommitted row, PostgreSQL reported a deadlock, and the push fell back to the disk buffer. A
transaction (`run_transaction`) locked the existing partitions of its pushes before creating the
new ones, the opposite of `push_batch`, and could deadlock with a push the same way. Here
concurrent calls push into fresh partitions in shuffled orders, again and again, and every
message must be stored exactly once without a single deadlock.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from queen.db import push_batch
from queen.db.items import PushItem
from queen.storage.pgcluster import PgCluster
from tests.integration.api import unique
from tests.integration.test_lock_order import (
    deadlock_counter,
    schema_database,  # noqa: F401 (a fixture)
    wait_backends_gone,
)

ROUNDS = 40
PARTITIONS = 12
CALLERS = 4


def _items(queue: str, partitions: list[str], caller: int) -> list[PushItem]:
    return [
        PushItem(
            queue=queue,
            partition=partition,
            transaction_id=f"{caller}-{partition}",
            message_id=str(uuid.uuid4()),
            payload=msgspec.Raw(b'{"n": 1}'),
        )
        for partition in partitions
    ]


async def _push(conn: asyncpg.Connection, items: list[PushItem]) -> None:
    args, _plan = push_batch.encode(items)
    await conn.fetchrow(push_batch.SQL, *args)


async def _transaction(conn: asyncpg.Connection, items: list[PushItem]) -> None:
    """The same pushes through `run_transaction`: its up-front locks come before `push_items`
    creates anything."""
    ops = [
        {
            "type": "push",
            "item": {
                "queue": item.queue,
                "partition": item.partition,
                "transactionId": item.transaction_id,
                "payload": {"n": 1},
            },
        }
        for item in items
    ]
    raw = await conn.fetchval("SELECT queen.run_transaction($1::jsonb)", json.dumps(ops))
    assert json.loads(raw)["success"], raw


async def _rounds(dsn: dict[str, Any], prefix: str) -> list[str]:
    """Each round: a fresh set of partitions (half of the rounds in a fresh queue too), one of
    them already existing so that every caller also locks a row someone else may hold, pushed
    by every caller at once in its own shuffled order; the last caller goes through a
    transaction."""
    rng = random.Random(20)
    conns = [await asyncpg.connect(**dsn) for _ in range(CALLERS)]
    queues: list[str] = []
    try:
        for round_ in range(ROUNDS):
            queue = f"{prefix}-{round_ // 2}"
            queues.append(queue)
            names = [f"r{round_}-p{p}" for p in range(PARTITIONS)]
            await _push(conns[0], _items(queue, names[:1], -1))
            calls = []
            for caller, conn in enumerate(conns):
                order = names[:]
                rng.shuffle(order)
                pushes = _items(queue, order, caller)
                call = _transaction if caller == CALLERS - 1 else _push
                calls.append(call(conn, pushes))
            await asyncio.gather(*calls)
    finally:
        for conn in conns:
            await conn.close()
    return sorted(set(queues))


async def _stored(dsn: dict[str, Any], queues: list[str]) -> list[Any]:
    conn = await asyncpg.connect(**dsn)
    try:
        return await conn.fetch(
            "SELECT m.transaction_id, p.name AS partition, count(*) AS n"
            " FROM queen.messages m JOIN queen.partitions p ON p.id = m.partition_id"
            " JOIN queen.queues q ON q.id = p.queue_id"
            " WHERE q.name = ANY($1::text[]) GROUP BY 1, 2",
            queues,
        )
    finally:
        await conn.close()


@pytest.mark.timeout(120)
def test_concurrent_pushes_into_new_partitions_never_deadlock(
    pg_cluster: PgCluster,
    schema_database: str,  # noqa: F811
) -> None:
    """A deadlock reaches its caller as DeadlockDetectedError; the database's counter must not
    move either."""
    dsn = {**pg_cluster.dsn_parts(), "database": schema_database}
    wait_backends_gone(pg_cluster, schema_database)
    before = deadlock_counter(pg_cluster, schema_database)
    queues = asyncio.run(_rounds(dsn, unique("pushlocks")))
    stored = asyncio.run(_stored(dsn, queues))
    wait_backends_gone(pg_cluster, schema_database)
    assert deadlock_counter(pg_cluster, schema_database) == before

    assert all(row["n"] == 1 for row in stored), "a message stored twice"
    expected = ROUNDS * (1 + CALLERS * PARTITIONS)
    assert len(stored) == expected
