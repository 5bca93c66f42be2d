"""The `/streams/v1/*` routes over HTTP against a real server and PostgreSQL: registration and its
hash check, state reads and their filters, and the cycle's exactly-once rules (a replayed cycle
applies once, an expired lease is refused, sink messages wake a waiting consumer). Every check of
what was or was not written reads the tables with SQL."""

from __future__ import annotations

import uuid
from typing import Any

import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, run_sql

SEP = "\u001f"


async def register(api: Api, name: str, config_hash: str = "h1", **extra: Any) -> tuple[int, Any]:
    body = {"name": name, "source_queue": "src", "config_hash": config_hash, **extra}
    return await api.request("POST", "/streams/v1/queries", json=body)


async def query_id(api: Api, name: str | None = None) -> str:
    status, body = await register(api, name or unique("sq"))
    assert status == 200 and body["success"], body
    return str(body["query_id"])


async def cycle(api: Api, **body: Any) -> tuple[int, dict[str, Any]]:
    status, answer = await api.request("POST", "/streams/v1/cycle", json=body)
    assert isinstance(answer, dict), answer
    return status, answer


async def state(api: Api, qid: str, partition_id: str, **filters: Any) -> dict[str, Any]:
    body = {"query_id": qid, "partition_id": partition_id, "keys": [], **filters}
    status, answer = await api.request("POST", "/streams/v1/state/get", json=body)
    assert status == 200 and answer["success"], answer
    return {row["key"]: row["value"] for row in answer["rows"]}


async def popped_batch(api: Api, queue: str, group: str, count: int) -> list[dict[str, Any]]:
    await api.push(queue, [{"n": n} for n in range(count)], partition="p0")
    popped = await api.pop(queue, batch=count, consumerGroup=group)
    assert popped is not None and len(popped["messages"]) == count
    return list(popped["messages"])


def ack_of(message: dict[str, Any], count: int) -> dict[str, Any]:
    return {
        "transactionId": message["transactionId"],
        "leaseId": message["leaseId"],
        "status": "completed",
        "count": count,
    }


def cursor(cluster: PgCluster, database: str, partition_id: str, group: str) -> dict[str, Any]:
    rows = run_sql(
        cluster,
        "SELECT last_consumed_seq, total_messages_consumed, worker_id, batch_retry_count"
        " FROM queen.partition_consumers WHERE partition_id = $1 AND consumer_group = $2",
        uuid.UUID(partition_id),
        group,
        database=database,
    )
    return dict(rows[0]) if rows else {}


def messages_in(cluster: PgCluster, database: str, queue: str) -> int:
    rows = run_sql(
        cluster,
        "SELECT count(*) AS n FROM queen.messages m"
        " JOIN queen.partitions p ON p.id = m.partition_id"
        " JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1",
        queue,
        database=database,
    )
    return int(rows[0]["n"])


async def wait_for_lease_expiry(
    cluster: PgCluster, database: str, partition_id: str, group: str
) -> None:
    expired = (
        "SELECT lease_expires_at < now() AS gone FROM queen.partition_consumers"
        " WHERE partition_id = $1 AND consumer_group = $2"
    )
    with trio.fail_after(10):
        while True:
            if run_sql(cluster, expired, uuid.UUID(partition_id), group, database=database)[0][
                "gone"
            ]:
                return
            await trio.sleep(0.05)


async def test_registration_is_idempotent_refuses_a_new_shape_and_resets_on_request(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    name = unique("reg")
    async with Api(server.url) as api:
        first, second = [await register(api, name, sink_queue="out") for _ in range(2)]
        assert first[0] == 200 and first[1]["fresh"] is True and first[1]["reset"] is False
        assert second[0] == 200 and second[1]["fresh"] is False
        assert second[1]["query_id"] == first[1]["query_id"]
        qid = first[1]["query_id"]
        await api.push("reg-src", [{"n": 1}], partition="p0")
        popped = await api.pop("reg-src", batch=1)
        assert popped is not None
        partition_id = popped["messages"][0]["partitionId"]
        status, answer = await cycle(
            api,
            query_id=qid,
            partition_id=partition_id,
            state_ops=[{"type": "upsert", "key": "k", "value": 1}],
        )
        assert status == 200 and answer["success"], answer

        status, conflict = await register(api, name, "h2")
        assert status == 409
        assert conflict["error"].startswith("config_hash mismatch")
        assert conflict["query_id"] == qid and conflict["success"] is False
        assert await state(api, qid, partition_id) == {"k": 1}, "a refused shape wipes nothing"

        status, reset = await register(api, name, "h2", reset=True)
        assert status == 200 and reset["reset"] is True and reset["query_id"] == qid
        assert await state(api, qid, partition_id) == {}
    stored = run_sql(
        pg_cluster,
        "SELECT config_hash, sink_queue FROM queen_streams.queries WHERE name = $1",
        name,
        database=database,
    )
    assert [tuple(row) for row in stored] == [("h2", None)]


async def test_concurrent_first_registrations_of_one_name_agree_on_one_hash(
    server: ServerProcess,
) -> None:
    name = unique("race")
    answers: list[tuple[int, Any]] = []
    async with Api(server.url) as api:

        async def one(config_hash: str) -> None:
            answers.append(await register(api, name, config_hash))

        async with trio.open_nursery() as nursery:
            for config_hash in ("a", "b", "a", "b", "a", "b"):
                nursery.start_soon(one, config_hash)
    accepted = {body["config_hash"] for status, body in answers if status == 200}
    assert len(accepted) == 1, answers
    assert sum(1 for status, body in answers if status == 200 and body["fresh"]) == 1
    assert sum(1 for status, _ in answers if status == 409) == 3


async def test_state_reads_filter_by_keys_literal_prefix_and_numeric_ripeness(
    server: ServerProcess,
) -> None:
    async with Api(server.url) as api:
        qid = await query_id(api)
        await api.push("state-src", [{"n": 1}], partition=unique("p"))
        popped = await api.pop("state-src", batch=1)
        assert popped is not None
        partition_id = popped["messages"][0]["partitionId"]
        values = {
            f"tumb:60{SEP}a": {"acc": 1, "windowEnd": 1000},
            f"tumb:60{SEP}b": {"acc": 2, "windowEnd": 2000.5},
            f"tumb_60{SEP}c": {"acc": 3, "windowEnd": 10},
            "__wm__": {"eventTimeMs": 5},
            "plain": None,
        }
        ops = [{"type": "upsert", "key": key, "value": value} for key, value in values.items()]
        ops.append({"type": "delete", "key": "absent"})
        status, answer = await cycle(
            api, query_id=qid, partition_id=partition_id, state_ops=ops, push_items=None
        )
        assert status == 200 and answer["success"] and answer["state_ops_applied"] == 6, answer

        whole = await state(api, qid, partition_id)
        assert whole == values
        assert list(whole) == sorted(values, key=str.encode), "rows in byte order of their keys"
        assert await state(api, qid, partition_id, keys=["plain", "nope"]) == {"plain": None}
        prefixed = await state(api, qid, partition_id, key_prefix=f"tumb:60{SEP}")
        assert sorted(prefixed) == [f"tumb:60{SEP}a", f"tumb:60{SEP}b"]
        ripe = await state(
            api, qid, partition_id, key_prefix=f"tumb:60{SEP}", ripe_at_or_before=2000.5
        )
        assert sorted(ripe) == [f"tumb:60{SEP}a", f"tumb:60{SEP}b"]
        assert list(await state(api, qid, partition_id, ripe_at_or_before=999.9)) == [
            f"tumb_60{SEP}c"
        ]
        unknown = await state(api, str(uuid.uuid4()), partition_id)
        assert unknown == {}


async def test_a_replayed_cycle_applies_once_and_its_sink_message_wakes_a_waiting_consumer(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    source, sink, group = unique("src"), unique("sink"), unique("streams.g")
    async with Api(server.url) as api:
        qid = await query_id(api)
        messages = await popped_batch(api, source, group, 3)
        partition_id = messages[0]["partitionId"]
        body = {
            "query_id": qid,
            "partition_id": partition_id,
            "consumer_group": group,
            "state_ops": [{"type": "upsert", "key": "sum", "value": {"acc": 3}}],
            "push_items": [{"queue": sink, "partition": "p0", "payload": {"sum": 3}}],
            "ack": ack_of(messages[-1], 3),
            "release_lease": False,  # the gate's partial ack: the lease survives the commit
        }
        async with trio.open_nursery() as nursery:
            woken: list[Any] = []

            async def consume() -> None:
                woken.append(await api.pop(sink, wait=True, timeout=10000))

            nursery.start_soon(consume)
            await api.wait_parked(1)
            first = await cycle(api, **body)
            replay = await cycle(api, **body)
        assert first[0] == 200 and first[1]["success"], first
        assert first[1]["push_results"][0]["status"] == "queued"
        assert first[1]["ack_result"] == {
            "success": True,
            "count": 3,
            "lease_released": False,
            "dlq": False,
        }
        assert replay[0] == 200 and replay[1]["success"] is False
        assert replay[1]["error"].startswith("Stale ack")
        assert replay[1]["push_results"] == [] and replay[1]["state_ops_applied"] == 0
        assert woken[0] is not None and woken[0]["messages"][0]["data"] == {"sum": 3}

    assert messages_in(pg_cluster, database, sink) == 1
    consumed = cursor(pg_cluster, database, partition_id, group)
    assert consumed["total_messages_consumed"] == 3
    assert consumed["worker_id"] == messages[0]["leaseId"]


async def test_a_released_lease_refuses_the_replay_and_frees_the_partition(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    source, sink, group = unique("src"), unique("sink"), unique("streams.g")
    async with Api(server.url) as api:
        qid = await query_id(api)
        messages = await popped_batch(api, source, group, 2)
        partition_id = messages[0]["partitionId"]
        body = {
            "query_id": qid,
            "partition_id": partition_id,
            "consumer_group": group,
            "push_items": [{"queue": sink, "payload": {"v": 1}}],
            "ack": ack_of(messages[-1], 2),
            "release_lease": True,
        }
        first = await cycle(api, **body)
        replay = await cycle(api, **body)
        assert first[1]["success"] and first[1]["ack_result"]["lease_released"], first
        assert replay[1] == {**replay[1], "success": False, "error": "Invalid or expired lease"}
        await api.push(source, [{"n": 9}], partition="p0")
        again = await api.pop(source, batch=5, consumerGroup=group)
        assert again is not None and [m["data"] for m in again["messages"]] == [{"n": 9}]
    assert messages_in(pg_cluster, database, sink) == 1
    consumed = cursor(pg_cluster, database, partition_id, group)
    assert consumed["total_messages_consumed"] == 2 and consumed["batch_retry_count"] == 0


async def test_an_expired_lease_is_refused_and_nothing_of_the_cycle_is_kept(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    source, sink, group = unique("src"), unique("sink"), unique("streams.g")
    async with Api(server.url) as api:
        status, _ = await api.request(
            "POST", "/api/v1/configure", json={"queue": source, "options": {"leaseTime": 1}}
        )
        assert status == 200
        qid = await query_id(api)
        messages = await popped_batch(api, source, group, 2)
        partition_id = messages[0]["partitionId"]
        await wait_for_lease_expiry(pg_cluster, database, partition_id, group)
        status, answer = await cycle(
            api,
            query_id=qid,
            partition_id=partition_id,
            consumer_group=group,
            state_ops=[{"type": "upsert", "key": "k", "value": 1}],
            push_items=[{"queue": sink, "payload": {}}],
            ack=ack_of(messages[-1], 2),
        )
        assert status == 200 and answer["success"] is False, answer
        assert answer["error"] == "Invalid or expired lease"
        assert await state(api, qid, partition_id) == {}
    assert messages_in(pg_cluster, database, sink) == 0
    assert cursor(pg_cluster, database, partition_id, group)["last_consumed_seq"] == 0


async def test_a_cycle_of_an_unknown_or_deleted_query_is_refused(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    sink = unique("sink")
    async with Api(server.url) as api:
        name = unique("gone")
        qid = await query_id(api, name)
        await api.push("gone-src", [{"n": 1}], partition="p0")
        popped = await api.pop("gone-src", batch=1)
        assert popped is not None
        partition_id = popped["messages"][0]["partitionId"]
        run_sql(
            pg_cluster, "DELETE FROM queen_streams.queries WHERE name = $1", name, database=database
        )
        for unknown in (qid, str(uuid.uuid4())):
            status, answer = await cycle(
                api,
                query_id=unknown,
                partition_id=partition_id,
                push_items=[{"queue": sink, "payload": {}}],
            )
            assert status == 404 and answer["error"] == "query not found", answer
    assert messages_in(pg_cluster, database, sink) == 0


async def test_a_failed_ack_dead_letters_the_message_and_frees_the_partition(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    source, group = unique("src"), unique("streams.g")
    async with Api(server.url) as api:
        qid = await query_id(api)
        messages = await popped_batch(api, source, group, 2)
        partition_id = messages[0]["partitionId"]
        ack = {**ack_of(messages[-1], 2), "status": "failed", "error": "poison"}
        status, answer = await cycle(
            api,
            query_id=qid,
            partition_id=partition_id,
            consumer_group=group,
            ack=ack,
            release_lease=False,  # a dead-letter cycle releases the lease whatever this says
        )
        assert status == 200 and answer["success"], answer
        assert answer["ack_result"] == {
            "success": True,
            "count": 0,
            "lease_released": True,
            "dlq": True,
        }
    dead = run_sql(
        pg_cluster,
        "SELECT error_message FROM queen.dead_letter_queue d JOIN queen.messages m"
        " ON m.id = d.message_id WHERE m.transaction_id = $1 AND d.consumer_group = $2",
        messages[-1]["transactionId"],
        group,
        database=database,
    )
    assert [row["error_message"] for row in dead] == ["poison"]
    consumed = cursor(pg_cluster, database, partition_id, group)
    assert consumed["last_consumed_seq"] == 2 and consumed["worker_id"] is None


async def test_state_goes_with_its_partition(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    source = unique("src")
    async with Api(server.url) as api:
        qid = await query_id(api)
        await api.push(source, [{"n": 1}], partition="p0")
        popped = await api.pop(source, batch=1)
        assert popped is not None
        partition_id = popped["messages"][0]["partitionId"]
        ops = [{"type": "upsert", "key": "k", "value": 1}]
        status, answer = await cycle(api, query_id=qid, partition_id=partition_id, state_ops=ops)
        assert status == 200 and answer["success"], answer
        status, _ = await api.request("DELETE", f"/api/v1/resources/queues/{source}")
        assert status == 200
        assert await state(api, qid, partition_id) == {}
        status, answer = await cycle(api, query_id=qid, partition_id=partition_id, state_ops=ops)
        assert status == 200 and answer == {
            **answer,
            "success": False,
            "error": "partition not found",
        }
    left = run_sql(
        pg_cluster,
        "SELECT count(*) AS n FROM queen_streams.state WHERE partition_id = $1",
        uuid.UUID(partition_id),
        database=database,
    )
    assert left[0]["n"] == 0
