"""A consumer pops and goes silent: when its lease runs out the messages go to another consumer,
and its late acknowledgement neither completes them a second time nor moves any counter.

Checked on the database's own books: queen.partition_consumers.total_messages_consumed and the
cursor must count each message once, whatever order the two consumers' acks arrive in.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import eventually, sql
from tests.integration.api import Api, unique
from tests.support import ServerProcess

pytestmark = pytest.mark.faults

LEASE_S = 1
MESSAGES = 20


async def consumer_books(cluster: PgCluster, database: str, queue: str) -> dict[str, Any]:
    rows = await sql(
        cluster,
        "SELECT pc.total_messages_consumed, pc.last_consumed_seq, pc.worker_id, "
        "(SELECT count(*) FROM queen.messages m WHERE m.partition_id = p.id) AS stored "
        "FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id "
        "LEFT JOIN queen.partition_consumers pc ON pc.partition_id = p.id "
        "AND pc.consumer_group = '__QUEUE_MODE__' WHERE q.name = $1",
        queue,
        database=database,
    )
    assert len(rows) == 1
    return dict(rows[0])


async def test_expired_lease_goes_to_another_consumer_and_late_ack_is_refused(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique("lease")
    async with Api(server.url) as first, Api(server.url) as second:
        status, _ = await first.request(
            "POST", "/api/v1/configure", json={"queue": queue, "options": {"leaseTime": LEASE_S}}
        )
        assert status == 200
        pushed = await first.push(queue, [{"n": n} for n in range(MESSAGES)])
        assert all(r["status"] == "queued" for r in pushed)

        silent = await first.pop(queue, batch=MESSAGES)
        assert silent is not None and len(silent["messages"]) == MESSAGES
        assert await second.pop(queue, batch=MESSAGES) is None, "the lease is held"

        taken_over: dict[str, Any] = {}

        async def redelivered() -> bool:
            popped = await second.pop(queue, batch=MESSAGES)
            if popped is not None:
                taken_over.update(popped)
            return popped is not None

        with trio.fail_after(LEASE_S + 5):
            started = trio.current_time()
            await eventually(redelivered, LEASE_S + 5, "the lease to expire", every_s=0.1)
            redelivered_after = trio.current_time() - started
        assert [m["id"] for m in taken_over["messages"]] == [m["id"] for m in silent["messages"]]
        assert taken_over["leaseId"] != silent["leaseId"]

        late = await first.ack_batch(silent["messages"])
        books_after_late = await consumer_books(pg_cluster, database, queue)
        on_time = await second.ack_batch(taken_over["messages"])
        books_after_ack = await consumer_books(pg_cluster, database, queue)
        later_still = await first.ack_batch(silent["messages"])
        single_late = await first.ack(silent["messages"][0])
        books_final = await consumer_books(pg_cluster, database, queue)
        leftover = await second.pop(queue, batch=MESSAGES)

    figures = {
        "pushed": MESSAGES,
        "delivered_first": len(silent["messages"]),
        "delivered_second": len(taken_over["messages"]),
        "redelivered_after_s": round(redelivered_after, 2),
        "late_acks_refused": sum(not r["success"] for r in late + later_still)
        + (not single_late["success"]),
        "late_acks_accepted": sum(r["success"] for r in late + later_still)
        + single_late["success"],
        "acks_accepted": sum(r["success"] for r in on_time),
        "consumed_after_late_ack": books_after_late["total_messages_consumed"],
        "consumed_after_ack": books_after_ack["total_messages_consumed"],
        "consumed_final": books_final["total_messages_consumed"],
        "stored": books_final["stored"],
    }
    print("\n[lease-expiry] " + " ".join(f"{k}={v}" for k, v in figures.items()))
    assert all(r["error"] == "Invalid or expired lease" for r in late + later_still)
    assert figures["late_acks_accepted"] == 0
    assert figures["acks_accepted"] == MESSAGES
    assert books_after_late["total_messages_consumed"] == 0
    assert books_after_late["last_consumed_seq"] == 0, "the late ack did not move the cursor"
    assert books_after_ack["total_messages_consumed"] == MESSAGES
    assert books_final == books_after_ack, "a late ack after completion changes nothing"
    assert books_final["worker_id"] is None, "the partition is free again"
    assert leftover is None, "nothing is delivered a third time"


async def test_late_ack_without_lease_id_does_not_count_twice(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique("lease-nolid")
    async with Api(server.url) as api:
        await api.request(
            "POST", "/api/v1/configure", json={"queue": queue, "options": {"leaseTime": LEASE_S}}
        )
        await api.push(queue, [{"n": 1}])
        silent = await api.pop(queue)
        assert silent is not None
        taken_over: dict[str, Any] = {}

        async def redelivered() -> bool:
            popped = await api.pop(queue)
            if popped is not None:
                taken_over.update(popped)
            return popped is not None

        await eventually(redelivered, LEASE_S + 5, "the lease to expire", every_s=0.1)
        assert (await api.ack(taken_over["messages"][0]))["success"] is True
        late = dict(silent["messages"][0], leaseId=None)  # a client that does not send leaseId
        result = await api.ack(late)
        books = await consumer_books(pg_cluster, database, queue)
    print(f"\n[late-ack-no-lease] success={result['success']} consumed={books}")
    assert books["total_messages_consumed"] == 1
