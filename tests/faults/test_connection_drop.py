"""The connection between queen and PostgreSQL breaks under a transaction (push + ack): each
transaction is all or nothing, and a client that retries it ends with both effects exactly once.

First deterministically: the transactions ack first, and a test session holds the rows of their
source partitions locked FOR UPDATE, so each one sits inside PostgreSQL with its ack already
applied (the cursor moved), waiting to log the completion (the foreign-key check of
messages_consumed), when its backend is terminated; the ack must roll back with it. (A
transaction locks the partitions it pushes to before its first op, so blocking the push would
stop it before its ack.) Then at random: backends are terminated
every few hundred milliseconds while transactions run, and every transaction's two effects are
compared. Each transaction acks the one message of its own source partition and pushes
`tx-<partition>`, so both effects can be read back per transaction.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

import asyncpg
import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import (
    LOCK_PARTITIONS,
    dropped_while_blocked,
    new_database,
    run_under_fire,
    sql,
)
from tests.integration.api import Api, unique
from tests.support import ServerProcess, server_env

pytestmark = pytest.mark.faults

BLOCKED = 6
RANDOM = 40


async def effects(cluster: PgCluster, database: str, source: str, target: str) -> dict[str, Any]:
    """Per source partition: (ack applied?, copies of its push stored, lease holder)."""
    rows = await sql(
        cluster,
        "SELECT p.name, coalesce(pc.total_messages_consumed, 0) AS consumed, "
        "coalesce(pc.last_consumed_seq, 0) AS cursor, pc.worker_id AS lease, "
        "(SELECT count(*) FROM queen.messages m JOIN queen.partitions tp ON tp.id = m.partition_id"
        " JOIN queen.queues tq ON tq.id = tp.queue_id"
        " WHERE tq.name = $2 AND m.transaction_id = 'tx-' || p.name) AS pushed "
        "FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id "
        "LEFT JOIN queen.partition_consumers pc ON pc.partition_id = p.id "
        "AND pc.consumer_group = '__QUEUE_MODE__' WHERE q.name = $1 AND p.name <> 'Default'",
        source,
        target,
        database=database,
    )
    return {row["name"]: dict(row) for row in rows}


def transaction_body(
    message: dict[str, Any], target: str, ack_first: bool, partition: str | None = None
) -> dict[str, Any]:
    ack = {
        "type": "ack",
        "transactionId": message["transactionId"],
        "partitionId": message["partitionId"],
        "leaseId": message["leaseId"],
        "status": "completed",
    }
    push = {
        "type": "push",
        "items": [
            {
                "queue": target,
                "transactionId": f"tx-{message['partition']}",
                "payload": {"from": message["partition"]},
                **({"partition": partition} if partition else {}),
            }
        ],
    }
    return {"operations": [ack, push] if ack_first else [push, ack]}


async def consumer_row_locked(cluster: PgCluster, database: str, partition_id: str) -> bool:
    """Whether an open transaction holds the queue-mode consumer row of a partition: ack_items
    locks it when it applies an ack, so this shows an ack applied but not yet committed."""
    try:
        await sql(
            cluster,
            "SELECT 1 FROM queen.partition_consumers WHERE partition_id = $1::uuid "
            "AND consumer_group = '__QUEUE_MODE__' FOR UPDATE NOWAIT",
            partition_id,
            database=database,
        )
    except asyncpg.LockNotAvailableError:
        return True
    return False


async def run_transaction(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    """One attempt: `ok`, `refused` (PostgreSQL answered success:false), or the failure seen."""
    try:
        response = await client.post("/api/v1/transaction", json=body)
    except httpx.TransportError as error:
        return type(error).__name__
    if response.status_code != 200:
        return f"http-{response.status_code}"
    return "ok" if response.json().get("success") else "refused"


async def retry_until_settled(
    client: httpx.AsyncClient, body: dict[str, Any], outcomes: Counter[str]
) -> None:
    """Retry with the same lease until PostgreSQL decides: `ok`, or `refused` because an earlier
    attempt whose answer was lost had already committed (the lease is gone with the ack)."""
    with trio.fail_after(30):
        while True:
            outcome = await run_transaction(client, body)
            outcomes[f"retry-{outcome}"] += 1
            if outcome in ("ok", "refused"):
                return
            await trio.sleep(0.05)  # retry pacing


def atomic(state: dict[str, Any]) -> bool:
    return (state["consumed"], state["cursor"] > 0) in ((0, False), (1, True)) and state[
        "pushed"
    ] == state["consumed"]


async def test_connection_drop_mid_transaction_is_all_or_nothing(pg_cluster: PgCluster) -> None:
    database = await new_database(pg_cluster)
    server = ServerProcess(server_env(pg_cluster, database)).start()
    source, target = unique("txsrc"), unique("txdst")
    outcomes: Counter[str] = Counter()
    try:
        async with Api(server.url) as api:
            status, _ = await api.request(
                "POST", "/api/v1/configure", json={"queue": source, "options": {"leaseTime": 120}}
            )
            assert status == 200
            names = [f"s{n:03d}" for n in range(BLOCKED + RANDOM)]
            for name in names:
                await api.push(source, [{"p": name}], partition=name)
            await api.push(target, [{"seed": True}], transactionId="seed")
            messages = {}
            for name in names:
                popped = await api.pop(source, partition=name)
                assert popped is not None
                messages[name] = popped["messages"][0]
            client = api.client

            # Deterministic: ack applied, its completion log blocked on the source partition's
            # row lock, connection terminated. Each pushes to a target partition of its own:
            # pushes to one partition queue up before their first op, acks included.
            blocked = names[:BLOCKED]
            bodies = {
                n: transaction_body(messages[n], target, ack_first=True, partition=n)
                for n in blocked
            }
            acks_in_flight = 0

            async def count_acks_in_flight() -> None:
                nonlocal acks_in_flight
                for name in blocked:
                    partition_id = messages[name]["partitionId"]
                    acks_in_flight += await consumer_row_locked(pg_cluster, database, partition_id)

            first_try, terminated = await dropped_while_blocked(
                pg_cluster,
                database,
                {n: partial(run_transaction, client, bodies[n]) for n in blocked},
                (LOCK_PARTITIONS, (source, blocked)),
                before_drop=count_acks_in_flight,
            )
            after_drop = await effects(pg_cluster, database, source, target)
            for name in blocked:
                outcomes[f"blocked-{first_try[name]}"] += 1
                await retry_until_settled(client, bodies[name], outcomes)

            # At random: terminate every KILL_EVERY_S while transactions run.
            rest = names[BLOCKED:]

            async def attempt(own: httpx.AsyncClient, name: str) -> str:
                return await run_transaction(
                    own, transaction_body(messages[name], target, ack_first=False)
                )

            settled, fired = await run_under_fire(
                pg_cluster, database, server.url, rest, attempt, timeout_s=10.0
            )
            terminated += fired
            under_fire = await effects(pg_cluster, database, source, target)
            for name in rest:
                outcomes[f"random-{settled[name]}"] += 1
                if settled[name] != "ok":
                    body = transaction_body(messages[name], target, ack_first=False)
                    await retry_until_settled(client, body, outcomes)
        final = await effects(pg_cluster, database, source, target)
        target_counts = await sql(
            pg_cluster,
            "SELECT count(*) AS n, count(DISTINCT m.transaction_id) AS d FROM queen.messages m "
            "JOIN queen.partitions p ON p.id = m.partition_id "
            "JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1",
            target,
            database=database,
        )
    finally:
        server.stop()

    figures = {
        "transactions": len(names),
        "blocked_then_dropped": BLOCKED,
        "acks_applied_in_flight": acks_in_flight,
        "backends_terminated": terminated,
        "random_interrupted": sum(settled[n] != "ok" for n in rest),
        "acks_after_drop": sum(after_drop[n]["consumed"] for n in blocked),
        "pushes_after_drop": sum(after_drop[n]["pushed"] for n in blocked),
        "committed_under_fire": sum(under_fire[n]["consumed"] for n in rest),
        "torn_under_fire": sum(not atomic(under_fire[n]) for n in rest),
        "final_acks": sum(s["consumed"] for s in final.values()),
        "final_pushes": target_counts[0]["n"] - 1,
        "duplicates": target_counts[0]["n"] - target_counts[0]["d"],
        "outcomes": dict(outcomes),
    }
    print("\n[connection-drop] " + " ".join(f"{k}={v}" for k, v in figures.items()))
    assert acks_in_flight == BLOCKED, "each dropped transaction had applied its ack"
    assert all(first_try[n] != "ok" for n in blocked), first_try
    assert not [k for k in outcomes if "http-500" in k], "a dropped connection is a 503"
    assert figures["acks_after_drop"] == 0 and figures["pushes_after_drop"] == 0
    assert all(after_drop[n]["lease"] == messages[n]["leaseId"] for n in blocked)
    assert figures["torn_under_fire"] == 0, {n: s for n, s in under_fire.items() if not atomic(s)}
    assert all(atomic(s) and s["consumed"] == 1 for s in final.values()), final
    assert figures["final_pushes"] == len(names) and figures["duplicates"] == 0
