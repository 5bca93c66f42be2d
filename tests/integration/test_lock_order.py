"""Pops, acks, lease calls and transactions lock consumer rows in one order
(sql/functions/02_lock_order.sql).

Under load, fused pop requests (one transaction claiming several partitions) and acks spanning
several batches used to wait for each other's `partition_consumers` rows in opposite orders, and
PostgreSQL broke the cycles as deadlocks, each one costing a pop its deadlock_timeout. Here
concurrent consumers pop fused batches from many partitions for two groups (queue-wide, multi-
partition and explicit-partition requests), ack them alone or fused, inside transactions with
pushes, renew and release leases, and every message must be acknowledged exactly once per group
without a single deadlock.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import trio

from queen.storage.migrations import migrate
from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import create_database, run_sql, running_server, wait_until

PARTITIONS = 16
PER_PARTITION = 200
GROUPS = ("__QUEUE_MODE__", "audit")
CONSUMERS = 8
# Through the server: enough traffic that 002's lock order deadlocked in every run of it.
HTTP_PER_PARTITION = 300
HTTP_CONSUMERS = 16


def deadlock_lines(cluster: PgCluster) -> int:
    """'deadlock detected' errors in the cluster's log: written before the failing statement
    returns, so a count taken once the traffic has stopped is complete."""
    text = (cluster.data_dir / "postgres.log").read_text(errors="replace")
    return text.count("ERROR:  deadlock detected")


def deadlock_counter(cluster: PgCluster, database: str) -> int:
    rows = run_sql(cluster, "SELECT deadlocks FROM pg_stat_database WHERE datname = $1", database)
    return int(rows[0]["deadlocks"])


def wait_backends_gone(cluster: PgCluster, database: str) -> None:
    """A backend flushes its statistics before it leaves pg_stat_activity, so once a database has
    no other sessions, pg_stat_database counts everything they did."""

    def gone() -> bool:
        rows = run_sql(
            cluster,
            "SELECT count(*) AS n FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
            database=database,
        )
        return int(rows[0]["n"]) == 0

    wait_until(gone, 30, f"the sessions of {database} to end")


@pytest.fixture(scope="module")
def schema_database(pg_cluster: PgCluster) -> Iterator[str]:
    """A database migrated directly (no server: these tests call the procedures themselves)."""
    name = create_database(pg_cluster, "queen_locks")

    async def go() -> None:
        conn = await asyncpg.connect(**{**pg_cluster.dsn_parts(), "database": name})
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(go())
    yield name


def message_key(message: dict[str, Any]) -> tuple[str, str]:
    return message["consumerGroup"], message["transactionId"]


class Ledger:
    """What each group acknowledged; a message acked twice for one group is a double delivery."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.acked: dict[str, list[str]] = defaultdict(list)

    def record(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            group, transaction_id = message_key(message)
            self.acked[group].append(transaction_id)

    def complete(self) -> bool:
        return all(len(set(self.acked[g])) >= self.total for g in GROUPS)

    def check(self, expected: set[str]) -> None:
        for group in GROUPS:
            acked = self.acked[group]
            duplicates = len(acked) - len(set(acked))
            assert duplicates == 0, f"{group}: {duplicates} messages acknowledged twice"
            assert set(acked) == expected, f"{group}: {len(expected - set(acked))} never acked"


def ack_item(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "transactionId": message["transactionId"],
        "partitionId": message["partitionId"],
        "leaseId": message["leaseId"],
        "consumerGroup": message["consumerGroup"],
        "status": "completed",
    }


def blocks(messages: list[dict[str, Any]], rng: random.Random) -> list[list[dict[str, Any]]]:
    """Messages per (partition, group), in delivery order, the blocks shuffled: acks then come in
    no particular key order, as a client's would."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        by_key[(message["partitionId"], message["consumerGroup"])].append(message)
    shuffled = list(by_key.values())
    rng.shuffle(shuffled)
    return shuffled


# -- directly against the procedures ----------------------------------------------------------


async def _prefill(conn: asyncpg.Connection, queue: str) -> set[str]:
    items = [
        {
            "queue": queue,
            "partition": f"p{p}",
            "payload": {"p": p, "n": n},
            "transactionId": f"{p}-{n}",
        }
        for p in range(PARTITIONS)
        for n in range(PER_PARTITION)
    ]
    await conn.fetchval("SELECT queen.push_items($1::jsonb)", json.dumps(items))
    return {item["transactionId"] for item in items}


def pop_request(queue: str, rng: random.Random) -> dict[str, Any]:
    group = rng.choice(GROUPS)
    request: dict[str, Any] = {
        "queue": queue,
        "batch": rng.randint(5, 30),
        "leaseId": str(uuid.uuid4()),
        "group": group,
    }
    if rng.random() < 0.25:
        request["partition"] = f"p{rng.randrange(PARTITIONS)}"
    else:
        request["partitions"] = rng.randint(1, 3)
    return request


async def _consumer(dsn: dict[str, Any], queue: str, seed: int, ledger: Ledger) -> dict[str, int]:
    rng = random.Random(seed)
    seen: dict[str, int] = defaultdict(int)
    conn = await asyncpg.connect(**dsn)
    try:
        while not ledger.complete():
            requests = [pop_request(queue, rng) for _ in range(rng.randint(1, 4))]
            raw = await conn.fetchval("SELECT queen.pop_requests($1::jsonb)", json.dumps(requests))
            leases = [r for r in json.loads(raw) if r["messages"]]
            if not leases:
                seen["empty"] += 1
                await asyncio.sleep(0.005)  # back off from hammering a drained queue
                continue
            messages: list[dict[str, Any]] = []
            for lease in leases:
                roll = rng.random()
                if roll < 0.07:  # a consumer that gives its batch back unprocessed
                    released = await conn.fetchval(
                        "SELECT queen.release_lease($1)", lease["leaseId"]
                    )
                    assert released >= 1
                    seen["released"] += 1
                    continue
                if roll < 0.2:
                    renewal = [{"leaseId": lease["leaseId"], "seconds": 120}]
                    raw = await conn.fetchval(
                        "SELECT queen.renew_leases($1::jsonb)", json.dumps(renewal)
                    )
                    assert json.loads(raw)[0]["success"], raw
                    seen["renewed"] += 1
                messages.extend(lease["messages"])
            if not messages:
                continue
            ordered = [m for block in blocks(messages, rng) for m in block]
            if rng.random() < 0.15:
                ops: list[dict[str, Any]] = [{"type": "ack", **ack_item(m)} for m in ordered]
                push = {
                    "queue": f"{queue}-side",
                    "partition": f"s{rng.randrange(4)}",
                    "payload": {},
                    "transactionId": str(uuid.uuid4()),
                }
                ops.insert(rng.randint(0, len(ops)), {"type": "push", "item": push})
                raw = await conn.fetchval(
                    "SELECT queen.run_transaction($1::jsonb)", json.dumps(ops)
                )
                outcome = json.loads(raw)
                assert outcome["success"], outcome
                seen["transactions"] += 1
            else:
                raw = await conn.fetchval(
                    "SELECT queen.ack_items($1::jsonb)", json.dumps([ack_item(m) for m in ordered])
                )
                results = json.loads(raw)
                assert all(r["success"] for r in results), results
                seen["ack_calls"] += 1
            ledger.record(ordered)
    finally:
        await conn.close()
    return seen


async def _stress_in_sql(dsn: dict[str, Any], queue: str) -> tuple[Ledger, set[str], list[Any]]:
    conn = await asyncpg.connect(**dsn)
    try:
        expected = await _prefill(conn, queue)
    finally:
        await conn.close()
    ledger = Ledger(len(expected))
    consumers = [_consumer(dsn, queue, seed, ledger) for seed in range(CONSUMERS)]
    seen = await asyncio.wait_for(asyncio.gather(*consumers), 150)
    return ledger, expected, seen


@pytest.mark.timeout(180)
def test_fused_pops_acks_leases_and_transactions_in_sql_never_deadlock(
    pg_cluster: PgCluster, schema_database: str
) -> None:
    """Any deadlock reaches the caller here as asyncpg's DeadlockDetectedError."""
    dsn = {**pg_cluster.dsn_parts(), "database": schema_database}
    before = deadlock_lines(pg_cluster)
    ledger, expected, seen = asyncio.run(_stress_in_sql(dsn, unique("locks")))
    print("per consumer:", [dict(s) for s in seen])
    ledger.check(expected)
    assert deadlock_lines(pg_cluster) == before


async def _claims(conn: asyncpg.Connection, queue: str, count: int) -> list[str]:
    requests = [
        {"queue": queue, "batch": 1, "leaseId": str(uuid.uuid4()), "group": "audit"}
        for _ in range(count)
    ]
    raw = await conn.fetchval("SELECT queen.pop_requests($1::jsonb)", json.dumps(requests))
    return [r["partition"] for r in json.loads(raw) if r["messages"]]


async def _claims_beside_open_transactions(dsn: dict[str, Any], queue: str) -> None:
    first = await asyncpg.connect(**dsn)
    second = await asyncpg.connect(**dsn)
    try:
        items = [
            {"queue": queue, "partition": name, "payload": {}, "transactionId": f"{name}-{n}"}
            for name in ("a", "b", "c", "d")
            for n in range(3)
        ]
        await first.fetchval("SELECT queen.push_items($1::jsonb)", json.dumps(items))
        # Partition a gets the group's row now (one message consumed, two pending, no lease);
        # b, c and d get theirs on their first claim below.
        request = {
            "queue": queue,
            "partition": "a",
            "batch": 1,
            "leaseId": str(uuid.uuid4()),
            "group": "audit",
        }
        raw = await first.fetchval("SELECT queen.pop_requests($1::jsonb)", json.dumps([request]))
        [message] = json.loads(raw)[0]["messages"]
        raw = await first.fetchval(
            "SELECT queen.ack_items($1::jsonb)", json.dumps([ack_item(message)])
        )
        assert json.loads(raw)[0]["leaseReleased"]
        for conn in (first, second):
            # Waiting at all would be the bug: fail fast instead of hanging.
            await conn.execute("SET lock_timeout = '2s'")

        async with first.transaction():
            # Never-consumed partitions come first: two of b, c, d, their rows inserted here.
            mine = await _claims(first, queue, 2)
            assert len(mine) == 2 and "a" not in mine
            async with second.transaction():
                # The rows `first` inserted and has not committed are skipped, not waited for.
                theirs = await _claims(second, queue, 2)
                assert "a" in theirs and not set(mine) & set(theirs)
                assert set(mine) | set(theirs) == {"a", "b", "c", "d"}
                # The last one `second` inserted, and a, whose existing row it is updating.
                assert await _claims(first, queue, 1) == []
    finally:
        await first.close()
        await second.close()


@pytest.mark.timeout(60)
def test_queue_wide_claims_skip_rows_that_open_transactions_hold(
    pg_cluster: PgCluster, schema_database: str
) -> None:
    """Before the lock-order rules (sql/functions/02_lock_order.sql), the second claim waited in
    its INSERT ... ON CONFLICT for the first transaction (an existing row it was updating, or a
    row it had inserted)."""
    dsn = {**pg_cluster.dsn_parts(), "database": schema_database}
    asyncio.run(_claims_beside_open_transactions(dsn, unique("skip")))


# -- through the server, with fused calls --------------------------------------------------------


async def _http_consumer(
    api: Api, queue: str, seed: int, ledger: Ledger, seen: dict[str, int]
) -> None:
    rng = random.Random(1000 + seed)
    while not ledger.complete():
        group = rng.choice(GROUPS)
        params: dict[str, Any] = {"batch": rng.randint(5, 20), "wait": False}
        if group != "__QUEUE_MODE__":
            params["consumerGroup"] = group
        partition = None
        if rng.random() < 0.2:
            partition = f"p{rng.randrange(PARTITIONS)}"
        else:
            params["partitions"] = rng.randint(1, 3)
        popped = await api.pop(queue, partition, **params)
        if popped is None:
            seen["empty"] += 1
            await trio.sleep(0.005)  # back off from hammering a drained queue
            continue
        messages = popped["messages"]
        if rng.random() < 0.1:
            status, body = await api.request(
                "POST", f"/api/v1/lease/{popped['leaseId']}/extend", json={"seconds": 120}
            )
            assert status == 200 and body["success"], body
            seen["renewed"] += 1
        ordered = [m for block in blocks(messages, rng) for m in block]
        if rng.random() < 0.15:
            operations: list[dict[str, Any]] = [{"type": "ack", **ack_item(m)} for m in ordered]
            push = {"queue": f"{queue}-side", "partition": f"s{rng.randrange(4)}", "payload": {}}
            operations.insert(rng.randint(0, len(operations)), {"type": "push", "items": [push]})
            status, body = await api.request(
                "POST", "/api/v1/transaction", json={"operations": operations}
            )
            assert status == 200 and body["success"], body
            seen["transactions"] += 1
        else:
            results = await api.ack_batch(ordered, group=params.get("consumerGroup"))
            assert all(r["success"] for r in results), results
            seen["acks"] += 1
        ledger.record(ordered)


@pytest.mark.timeout(240)
async def test_fused_pops_and_acks_over_http_never_deadlock(pg_cluster: PgCluster) -> None:
    """Two workers; requests that arrive while calls of their kind are in flight wait in the
    batcher and fuse into multi-request pop and ack calls. The batcher retries a deadlocked fused
    call request by request, so the client would never notice; PostgreSQL's log and counters do."""
    database = create_database(pg_cluster, "queen_locks_http")
    queue = unique("locks")
    log_before = deadlock_lines(pg_cluster)
    env = {
        "NUM_WORKERS": "2",
        "SIDECAR_MICRO_BATCH_WAIT_MS": "5",
    }
    with running_server(pg_cluster, database, **env) as server:
        counter_before = deadlock_counter(pg_cluster, database)
        async with Api(server.url, timeout_s=60) as api:
            expected: set[str] = set()
            for p in range(PARTITIONS):
                items = [
                    {
                        "queue": queue,
                        "partition": f"p{p}",
                        "payload": {},
                        "transactionId": f"{p}-{n}",
                    }
                    for n in range(HTTP_PER_PARTITION)
                ]
                status, body = await api.request("POST", "/api/v1/push", json={"items": items})
                assert status == 201 and all(r["status"] == "queued" for r in body), body
                expected.update(item["transactionId"] for item in items)
            ledger = Ledger(len(expected))
            seen: dict[str, int] = defaultdict(int)
            with trio.fail_after(180):
                async with trio.open_nursery() as nursery:
                    for seed in range(HTTP_CONSUMERS):
                        nursery.start_soon(_http_consumer, api, queue, seed, ledger, seen)
    wait_backends_gone(pg_cluster, database)
    print("requests:", dict(seen))
    ledger.check(expected)
    assert deadlock_lines(pg_cluster) == log_before, "PostgreSQL logged deadlocks"
    assert deadlock_counter(pg_cluster, database) == counter_before
