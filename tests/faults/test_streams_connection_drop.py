"""The connection between queen and PostgreSQL breaks under streaming cycles: each cycle's state
change, sink message and source ack commit together or not at all, the server never re-runs a
cycle whose outcome it lost (it answers success:false), and a client that resends the same cycle
ends with every effect exactly once.

First deterministically: each cycle deletes a state key, pushes a sink message and acks; a test
session holds its source partition row FOR UPDATE, so the cycle sits inside PostgreSQL with the
key deleted, the message inserted and the cursor moved, waiting to log the completion (the
foreign key of messages_consumed), when its backend is terminated. Then at random: backends are
terminated every 150 ms while cycles that upsert, push and ack run. Effects are read with SQL.
Last, a cycle stuck on a lock ends in a failure within its bound, having written nothing.
"""

from __future__ import annotations

import uuid
from collections import Counter
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import (
    LOCK_PARTITIONS,
    HeldRowLock,
    dropped_while_blocked,
    new_database,
    run_under_fire,
    sql,
)
from tests.integration.api import Api, unique
from tests.support import ServerProcess, server_env

pytestmark = pytest.mark.faults

BLOCKED = 3
RANDOM = 16


async def effects(
    cluster: PgCluster, database: str, query_id: str, source: str, sink: str
) -> dict[str, tuple[int, int, int]]:
    """Per source partition: (state rows under key k, sink messages, cursor)."""
    rows = await sql(
        cluster,
        "SELECT p.name,"
        " (SELECT count(*) FROM queen_streams.state s WHERE s.query_id = $1"
        "   AND s.partition_id = p.id AND s.key = 'k') AS state,"
        " (SELECT count(*) FROM queen.messages m JOIN queen.partitions sp ON sp.id = m.partition_id"
        "   JOIN queen.queues sq ON sq.id = sp.queue_id WHERE sq.name = $3 AND sp.name = p.name)"
        "   AS pushed,"
        " coalesce(pc.last_consumed_seq, 0) AS cursor"
        " FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id"
        " LEFT JOIN queen.partition_consumers pc ON pc.partition_id = p.id"
        "  AND pc.consumer_group = '__QUEUE_MODE__' WHERE q.name = $2",
        uuid.UUID(query_id),
        source,
        sink,
        database=database,
    )
    return {row["name"]: (row["state"], row["pushed"], row["cursor"]) for row in rows}


def cycle_body(query_id: str, message: dict[str, Any], sink: str, op: str) -> dict[str, Any]:
    partition = message["partition"]
    state_op = (
        {"type": "upsert", "key": "k", "value": partition}
        if op == "upsert"
        else {"type": "delete", "key": "k"}
    )
    return {
        "query_id": query_id,
        "partition_id": message["partitionId"],
        "consumer_group": None,
        "state_ops": [state_op],
        "push_items": [{"queue": sink, "partition": partition, "payload": {"from": partition}}],
        "ack": {
            "transactionId": message["transactionId"],
            "leaseId": message["leaseId"],
            "status": "completed",
            "count": 1,
        },
        "release_lease": True,
    }


async def send(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    """`ok`, the failure text the server answered, or the transport failure seen."""
    try:
        response = await client.post("/streams/v1/cycle", json=body)
    except httpx.TransportError as error:
        return type(error).__name__
    if response.status_code != 200:
        return f"http-{response.status_code}"
    answer = response.json()
    return "ok" if answer["success"] else str(answer["error"])


async def resend_until_settled(
    client: httpx.AsyncClient, body: dict[str, Any], outcomes: Counter[str]
) -> None:
    """Resend the same cycle until PostgreSQL decides: committed now, or refused because an
    attempt whose answer was lost had committed (its lease went with it)."""
    with trio.fail_after(30):
        while True:
            outcome = await send(client, body)
            outcomes[f"resend-{outcome[:40]}"] += 1
            if outcome in ("ok", "Invalid or expired lease"):
                return
            await trio.sleep(0.05)  # resend pacing


@pytest.mark.timeout(120)
async def test_connection_drop_mid_cycle_is_all_or_nothing(pg_cluster: PgCluster) -> None:
    database = await new_database(pg_cluster)
    server = ServerProcess(server_env(pg_cluster, database)).start()
    source, sink = unique("cysrc"), unique("cysink")
    outcomes: Counter[str] = Counter()
    try:
        async with Api(server.url) as api:
            client = api.client
            status, registered = await api.request(
                "POST",
                "/streams/v1/queries",
                json={"name": unique("drop"), "source_queue": source, "config_hash": "h"},
            )
            assert status == 200, registered
            query_id = registered["query_id"]
            names = [f"s{n:03d}" for n in range(BLOCKED + RANDOM)]
            messages = {}
            for name in names:
                await api.push(source, [{"p": name}], partition=name)
                popped = await api.pop(source, partition=name)
                assert popped is not None
                messages[name] = popped["messages"][0]

            blocked = names[:BLOCKED]
            for name in blocked:  # the key the blocked cycles delete
                seed = {**cycle_body(query_id, messages[name], sink, "upsert")}
                seed.update(push_items=[], ack=None)
                assert await send(client, seed) == "ok"
            bodies = {n: cycle_body(query_id, messages[n], sink, "delete") for n in blocked}
            first_try, terminated = await dropped_while_blocked(
                pg_cluster,
                database,
                {n: partial(send, client, bodies[n]) for n in blocked},
                (LOCK_PARTITIONS, (source, blocked)),
            )
            after_drop = await effects(pg_cluster, database, query_id, source, sink)
            for name in blocked:
                await resend_until_settled(client, bodies[name], outcomes)

            rest = names[BLOCKED:]

            async def attempt(own: httpx.AsyncClient, name: str) -> str:
                return await send(own, cycle_body(query_id, messages[name], sink, "upsert"))

            settled, fired = await run_under_fire(
                pg_cluster, database, server.url, rest, attempt, timeout_s=30.0
            )
            terminated += fired
            under_fire = await effects(pg_cluster, database, query_id, source, sink)
            for name in rest:
                outcomes[f"random-{settled[name][:40]}"] += 1
                if settled[name] != "ok":
                    body = cycle_body(query_id, messages[name], sink, "upsert")
                    await resend_until_settled(client, body, outcomes)
        final = await effects(pg_cluster, database, query_id, source, sink)
    finally:
        server.stop()

    print(
        f"\n[streams-connection-drop] cycles={len(names)} terminated={terminated}"
        f" first_try={first_try} outcomes={dict(outcomes)}"
    )
    assert all(first_try[n] != "ok" for n in blocked), first_try
    assert all("outcome unknown" in first_try[n] for n in blocked), first_try
    assert {n: after_drop[n] for n in blocked} == dict.fromkeys(blocked, (1, 0, 0))
    torn = {n: under_fire[n] for n in rest if under_fire[n] not in ((0, 0, 0), (1, 1, 1))}
    assert torn == {}, "a cycle was applied in part"
    assert {n: final[n] for n in blocked} == dict.fromkeys(blocked, (0, 1, 1))
    assert {n: final[n] for n in rest} == dict.fromkeys(rest, (1, 1, 1))


@pytest.mark.timeout(60)
async def test_a_cycle_stuck_on_a_lock_fails_within_its_bound_and_writes_nothing(
    pg_cluster: PgCluster,
) -> None:
    """A cycle never outlives the clients' 30 s timeout (S18); here PostgreSQL's lock timeout,
    set short, ends one waiting on its query row, and the answer is a 200 failure."""
    database = await new_database(pg_cluster)
    server = ServerProcess(server_env(pg_cluster, database, DB_LOCK_TIMEOUT="1000")).start()
    source, sink, name = unique("bsrc"), unique("bsink"), unique("bound")
    try:
        async with Api(server.url) as api:
            status, registered = await api.request(
                "POST",
                "/streams/v1/queries",
                json={"name": name, "source_queue": source, "config_hash": "h"},
            )
            assert status == 200, registered
            await api.push(source, [{"n": 1}], partition="p0")
            popped = await api.pop(source)
            assert popped is not None
            message = popped["messages"][0]
            body = cycle_body(registered["query_id"], message, sink, "upsert")
            with HeldRowLock(
                pg_cluster,
                database,
                "SELECT 1 FROM queen_streams.queries WHERE name = $1 FOR UPDATE",
                name,
            ):
                with trio.fail_after(20):
                    outcome = await send(api.client, body)
            assert "lock timeout" in outcome, outcome
            after = await effects(pg_cluster, database, registered["query_id"], source, sink)
            assert after == {"p0": (0, 0, 0)}
            assert await send(api.client, body) == "ok", "the same cycle commits once it can"
    finally:
        server.stop()
