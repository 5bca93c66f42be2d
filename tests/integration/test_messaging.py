"""Core messaging as a user sees it over HTTP: push, pop, ack, leases, retries, transactions."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import HeldRowLock
from tests.integration.api import Api, unique
from tests.support import (
    ServerProcess,
    run_sql,
    running_server,
    sessions_waiting_for_a_lock,
    wait_until,
)


async def test_push_pop_ack_round_trip(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        pushed = await api.push(queue, [{"n": 1}, None, {}], transactionId=None)
        assert [r["status"] for r in pushed] == ["queued"] * 3
        assert [r["index"] for r in pushed] == [0, 1, 2]
        ids = [r["message_id"] for r in pushed]
        assert ids == sorted(ids), "message ids ascend in item order"
        assert all(uuid.UUID(i).version == 7 for i in ids)

        popped = await api.pop(queue, batch=10)
        assert popped is not None
        messages = popped["messages"]
        assert [m["data"] for m in messages] == [{"n": 1}, None, {}]
        first = messages[0]
        assert first["partition"] == "Default" and first["queue"] == queue
        assert first["leaseId"] == popped["leaseId"] and first["consumerGroup"] == "__QUEUE_MODE__"
        assert first["createdAt"].endswith("Z") and len(first["createdAt"].split(".")[1]) == 7
        assert popped["partitionsClaimed"] == 1

        assert await api.pop(queue) is None, "a leased partition gives nothing to a second consumer"
        results = await api.ack_batch(messages)
        assert all(r["success"] and r["error"] is None for r in results)
        assert results[-1]["leaseReleased"] is True
        assert await api.pop(queue) is None, "everything acked: nothing left"


async def test_fifo_within_a_partition_and_partitions_are_independent(
    server: ServerProcess,
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        for n in range(5):
            await api.push(queue, [{"n": n}], partition="a")
        await api.push(queue, [{"n": 100}], partition="b")
        first = await api.pop(queue, batch=10)
        second = await api.pop(queue, batch=10)
        assert first is not None and second is not None
        by_partition = {
            p["partition"]: [m["data"]["n"] for m in p["messages"]] for p in (first, second)
        }
        assert by_partition == {"a": [0, 1, 2, 3, 4], "b": [100]}
        assert await api.pop(queue) is None, "both partitions are leased"
        partition_pop = await api.pop(queue, partition="a")
        assert partition_pop is None, "the partition route respects the lease too"


async def test_duplicate_transaction_ids_are_stored_once(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        first = await api.push(queue, [{"v": 1}, {"v": 2}], transactionId="same")
        assert [r["status"] for r in first] == ["queued", "duplicate"]
        assert first[1]["message_id"] == first[0]["message_id"]

        results: list[list[dict[str, Any]]] = []

        async def push_once() -> None:
            results.append(await api.push(queue, [{"v": 3}], transactionId="race"))

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(push_once)
        statuses = sorted(r[0]["status"] for r in results)
        assert statuses == ["duplicate"] * 7 + ["queued"]
        assert len({r[0]["message_id"] for r in results}) == 1
        other = await api.push(queue, [{"v": 4}], partition="elsewhere", transactionId="same")
        assert other[0]["status"] == "queued", "dedup is per partition"


async def test_a_push_over_several_partitions_with_duplicates_delivers_each_message_once(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """One request, two partitions, a duplicate inside the request and one of an earlier push:
    results line up with the items, and the numbers a duplicate leaves unused are no hole a
    consumer stops at."""
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": 0}], partition="a", transactionId="t0")
        items = [
            {"queue": queue, "partition": "a", "payload": {"n": 1}, "transactionId": "t1"},
            {"queue": queue, "partition": "b", "payload": {"n": 2}, "transactionId": "t1"},
            {"queue": queue, "partition": "a", "payload": {"n": 3}, "transactionId": "t0"},
            {"queue": queue, "partition": "a", "payload": {"n": 4}, "transactionId": "t1"},
            {"queue": queue, "partition": "a", "payload": {"n": 5}, "transactionId": "t5"},
            {"queue": queue, "partition": "b", "payload": {"n": 6}},
        ]
        status, results = await api.request("POST", "/api/v1/push", json={"items": items})
        assert status == 201, results
        assert [r["status"] for r in results] == [
            "queued",
            "queued",
            "duplicate",
            "duplicate",
            "queued",
            "queued",
        ]
        assert results[3]["message_id"] == results[0]["message_id"]
        assert results[1]["partition_id"] == results[5]["partition_id"]
        assert results[0]["partition_id"] != results[1]["partition_id"]
        assert results[5]["transaction_id"] == results[5]["message_id"], "generated id is the v7 id"

        delivered: dict[str, list[int]] = {}
        while (popped := await api.pop(queue, batch=10)) is not None:
            delivered[popped["partition"]] = [m["data"]["n"] for m in popped["messages"]]
            await api.ack_batch(popped["messages"])
        assert delivered == {"a": [0, 1, 5], "b": [2, 6]}

        status, body = await api.request("DELETE", f"/api/v1/resources/queues/{queue}")
        assert status == 200, body
    left = run_sql(
        pg_cluster,
        "SELECT count(*) AS n FROM queen.messages m WHERE NOT EXISTS "
        "(SELECT 1 FROM queen.partitions p WHERE p.id = m.partition_id)",
        database=database,
    )
    assert left[0]["n"] == 0, "a deleted queue's messages go with it"


async def test_failed_ack_redelivers_then_dead_letters(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        status, _ = await api.request(
            "POST", "/api/v1/configure", json={"queue": queue, "options": {"retryLimit": 2}}
        )
        assert status == 200
        await api.push(queue, [{"job": 1}])
        for attempt in range(3):
            popped = await api.pop(queue)
            assert popped is not None, f"delivery {attempt + 1} of 3"
            result = await api.ack(popped["messages"][0], "failed", error="boom")
            assert result["success"] is True
            assert result["dlq"] is (attempt == 2)
        assert await api.pop(queue) is None, "dead-lettered message is not delivered again"
        status, dlq = await api.request("GET", "/api/v1/dlq", params={"queue": queue})
        assert status == 200 and dlq["total"] == 1
        dead = dlq["messages"][0]
        assert (dead["errorMessage"], dead["retryCount"], dead["data"]) == ("boom", 2, {"job": 1})
        status, _ = await api.request("GET", "/api/v1/dlq", params={"limit": "0"})
        assert status == 400
    rows = run_sql(
        pg_cluster,
        "SELECT d.error_message, d.retry_count FROM queen.dead_letter_queue d "
        "JOIN queen.partitions p ON p.id = d.partition_id JOIN queen.queues q "
        "ON q.id = p.queue_id WHERE q.name = $1",
        queue,
        database=database,
    )
    assert [(r["error_message"], r["retry_count"]) for r in rows] == [("boom", 2)]


async def test_expired_lease_makes_messages_deliverable_again(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.request(
            "POST", "/api/v1/configure", json={"queue": queue, "options": {"leaseTime": 1}}
        )
        await api.push(queue, [{"x": 1}])
        first = await api.pop(queue)
        assert first is not None
        with trio.fail_after(10):
            while (again := await api.pop(queue, wait=True, timeout=5000)) is None:
                pass
        assert again["messages"][0]["id"] == first["messages"][0]["id"]
        assert again["leaseId"] != first["leaseId"]
        late = await api.ack(first["messages"][0])
        assert late["success"] is False and late["error"] == "Invalid or expired lease"
        assert (await api.ack(again["messages"][0]))["success"] is True


async def test_lease_extension_without_a_body(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"x": 1}])
        popped = await api.pop(queue)
        assert popped is not None
        status, body = await api.request("POST", f"/api/v1/lease/{popped['leaseId']}/extend")
        assert status == 200 and body["success"] is True and body["error"] is None
        assert body["newExpiresAt"].endswith("Z") and body["leaseId"] == popped["leaseId"]
        status, body = await api.request("POST", f"/api/v1/lease/{uuid.uuid4()}/extend", json={})
        assert status == 200 and body["success"] is False and body["error"] == "Lease not found"


async def test_auto_ack_completes_on_delivery(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"x": 1}, {"x": 2}])
        popped = await api.pop(queue, batch=10, autoAck=True)
        assert popped is not None and popped["leaseId"] == ""
        assert all(m["leaseId"] == "" for m in popped["messages"])
        assert await api.pop(queue) is None


async def test_consumer_groups_each_see_every_message(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": n} for n in range(3)])
        for group in ("billing", "audit", None):
            params: dict[str, Any] = {"batch": 10}
            if group:
                params["consumerGroup"] = group
            popped = await api.pop(queue, **params)
            assert popped is not None and len(popped["messages"]) == 3, group
            await api.ack_batch(popped["messages"], group=group)
        await api.push(queue, [{"n": 3}])
        fresh = await api.pop(queue, consumerGroup="latecomer", subscriptionMode="new")
        assert fresh is None, "a new group in `new` mode skips history"
        await api.push(queue, [{"n": 4}])
        later = await api.pop(queue, consumerGroup="latecomer", subscriptionMode="new")
        assert later is not None and [m["data"]["n"] for m in later["messages"]] == [4]


async def test_transaction_is_all_or_nothing(server: ServerProcess) -> None:
    source, target = unique("src"), unique("dst")
    async with Api(server.url) as api:
        await api.push(source, [{"step": 1}])
        popped = await api.pop(source)
        assert popped is not None
        message = popped["messages"][0]
        failing = {
            "operations": [
                {"type": "push", "items": [{"queue": target, "payload": {"step": 2}}]},
                {
                    "type": "ack",
                    "transactionId": "no-such-message",
                    "partitionId": message["partitionId"],
                },
            ]
        }
        status, body = await api.request("POST", "/api/v1/transaction", json=failing)
        assert status == 200 and body["success"] is False
        assert "Message not found" in body["error"]
        assert await api.pop(target) is None, "the push of a failed transaction is not kept"

        ok = {
            "operations": [
                {
                    "type": "ack",
                    "transactionId": message["transactionId"],
                    "partitionId": message["partitionId"],
                    "status": "completed",
                },
                {"type": "push", "items": [{"queue": target, "payload": {"step": 2}}]},
            ]
        }
        status, body = await api.request("POST", "/api/v1/transaction", json=ok)
        assert status == 200 and body["success"] is True, body
        assert [r["type"] for r in body["results"]] == ["ack", "push"]
        assert await api.pop(source) is None
        moved = await api.pop(target)
        assert moved is not None and moved["messages"][0]["data"] == {"step": 2}


async def test_configure_echoes_options_and_queue_resources(server: ServerProcess) -> None:
    queue = f"{unique('billing')}.invoice"
    options = {
        "leaseTime": 30,
        "retryLimit": 5,
        "retryDelay": 10,
        "priority": 3,
        "maxSize": 0,
        "ttl": 60,
        "deadLetterQueue": True,
        "dlqAfterMaxRetries": True,
        "delayedProcessing": 0,
        "windowBuffer": 0,
        "retentionSeconds": 10,
        "completedRetentionSeconds": 5,
        "retentionEnabled": True,
        "encryptionEnabled": False,
        "maxWaitTimeSeconds": 0,
    }
    async with Api(server.url) as api:
        status, body = await api.request(
            "POST",
            "/api/v1/configure",
            json={"queue": queue, "namespace": "billing", "task": "invoice", "options": options},
        )
        assert status == 200 and body["configured"] is True
        assert body["options"] == options
        await api.push(queue, [{"x": 1}], partition="p1")
        status, listing = await api.request("GET", "/api/v1/resources/queues")
        assert status == 200
        mine = [q for q in listing["queues"] if q["name"] == queue]
        assert mine and mine[0]["messages"]["total"] == 1 and mine[0]["partitions"] == 2
        status, detail = await api.request("GET", f"/api/v1/resources/queues/{queue}")
        assert status == 200 and [p["name"] for p in detail["partitions"]] == ["Default", "p1"]
        status, by_task = await api.request(
            "GET", "/api/v1/pop", params={"task": "invoice", "namespace": "billing"}
        )
        assert status == 200 and by_task["queue"] == queue
        status, deleted = await api.request("DELETE", f"/api/v1/resources/queues/{queue}")
        assert status == 200 and deleted == {"deleted": True, "queue": queue, "existed": True}
        status, _ = await api.request("GET", f"/api/v1/resources/queues/{queue}")
        assert status == 404


async def test_a_partition_whose_messages_were_deleted_does_not_stall_wildcard_pops(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"gone": True}], partition="a")
        run_sql(
            pg_cluster,
            "DELETE FROM queen.messages m USING queen.partitions p, queen.queues q "
            "WHERE m.partition_id = p.id AND p.queue_id = q.id AND q.name = $1",
            queue,
            database=database,
        )
        await api.push(queue, [{"here": True}], partition="b")
        popped = await api.pop(queue)
        assert popped is not None and popped["messages"][0]["data"] == {"here": True}


async def test_stats_refresh_answers_without_a_body(server: ServerProcess) -> None:
    async with Api(server.url) as api:
        status, body = await api.request("POST", "/api/v1/stats/refresh")
        assert status == 200 and body["success"] is True


async def test_subscription_from_is_parsed_as_utc_and_unparsable_values_are_ignored(
    server: ServerProcess,
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": 1}])
        future = await api.pop(queue, consumerGroup="words", subscriptionFrom="tomorrow")
        assert future is not None, "PostgreSQL's special words are not timestamps: all history"
        skip = await api.pop(queue, consumerGroup="later", subscriptionFrom="2999-01-01T00:00:00")
        assert skip is None, "a zone-less timestamp far ahead skips everything"
        mode_new = await api.pop(
            queue, consumerGroup="fresh", subscriptionFrom="garbage", subscriptionMode="new"
        )
        assert mode_new is None, "an unparsable subscriptionFrom leaves the mode in charge"


async def test_direct_sql_push_entry_points_store_and_report_duplicates(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    items = [
        {"queue": queue, "payload": {"n": 1}, "transactionId": "x"},
        {"queue": queue, "partition": "p", "payload": {"n": 2}},
    ]
    v2 = run_sql(
        pg_cluster,
        "SELECT queen.push_messages_v2($1::jsonb) AS r",
        json.dumps(items),
        database=database,
    )
    first = json.loads(v2[0]["r"])
    assert [r["status"] for r in first] == ["queued", "queued"]
    assert first[0]["queueName"] == queue and first[0]["transaction_id"] == "x"
    v3 = run_sql(
        pg_cluster,
        "SELECT queen.push_messages_v3($1::jsonb) AS r",
        json.dumps(items[:1]),
        database=database,
    )
    again = json.loads(v3[0]["r"])
    assert again["items"][0]["status"] == "duplicate"
    assert again["items"][0]["message_id"] == first[0]["message_id"]
    async with Api(server.url) as api:
        popped = await api.pop(queue, partition="Default", batch=5)
        assert popped is not None and [m["data"] for m in popped["messages"]] == [{"n": 1}]


async def test_direct_sql_push_resolves_repeats_within_one_call(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """queen.push_items (the JSONB form transactions and direct SQL use) hands push_batch each
    (queue, partition, transactionId) once: a repeat is a duplicate of the first item, the same
    transactionId in another partition is a message of its own, and sequence numbers stay
    consecutive so the next push continues after them."""
    queue = unique()

    def push(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = run_sql(
            pg_cluster,
            "SELECT queen.push_items($1::jsonb) AS r",
            json.dumps(items),
            database=database,
        )
        result: list[dict[str, Any]] = json.loads(rows[0]["r"])
        return result

    stored_before = push([{"queue": queue, "payload": 0, "transactionId": "old"}])
    results = push(
        [
            {"queue": queue, "payload": 1, "transactionId": "a"},
            {"queue": queue, "payload": 2, "transactionId": "a"},
            {"queue": queue, "partition": "other", "payload": 3, "transactionId": "a"},
            {"queue": queue, "payload": 4, "transactionId": "old"},
            {"queue": queue, "payload": 5, "transactionId": "old"},
            {"queue": queue, "payload": 6, "transactionId": "b"},
        ]
    )
    assert [r["status"] for r in results] == [
        "queued",
        "duplicate",
        "queued",
        "duplicate",
        "duplicate",
        "queued",
    ]
    assert results[1]["message_id"] == results[0]["message_id"]
    assert results[3]["message_id"] == results[4]["message_id"] == stored_before[0]["message_id"]
    assert results[2]["partition_id"] != results[0]["partition_id"]
    push([{"queue": queue, "payload": 7, "transactionId": "c"}])
    rows = run_sql(
        pg_cluster,
        "SELECT p.name, m.seq, m.payload::text AS payload, p.last_seq FROM queen.messages m "
        "JOIN queen.partitions p ON p.id = m.partition_id "
        "JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1 ORDER BY p.name, m.seq",
        queue,
        database=database,
    )
    stored = [(r["name"], r["seq"], r["payload"]) for r in rows]
    assert stored == [
        ("Default", 1, "0"),
        ("Default", 2, "1"),
        ("Default", 4, "6"),  # 3 went unused by the duplicate of "old"
        ("Default", 5, "7"),
        ("other", 1, "3"),
    ]
    assert {r["name"]: r["last_seq"] for r in rows} == {"Default": 5, "other": 1}


async def test_payload_numbers_are_stored_as_written(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """A payload is stored as the client wrote it, so a 25-digit integer keeps its digits; a
    number beyond a float's range, which could be stored but never delivered, is refused."""
    queue = unique()

    def body(payload: bytes) -> bytes:
        return b'{"items":[{"queue":"' + queue.encode() + b'","payload":' + payload + b"}]}"

    headers = {"Content-Type": "application/json"}
    async with Api(server.url) as api:
        response = await api.client.post(
            "/api/v1/push", content=body(b'{"id": 1234567890123456789012345}'), headers=headers
        )
        assert response.status_code == 201, response.text
        stored = run_sql(
            pg_cluster,
            "SELECT m.payload->>'id' AS id FROM queen.messages m "
            "JOIN queen.partitions p ON p.id = m.partition_id "
            "JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1",
            queue,
            database=database,
        )
        assert [row["id"] for row in stored] == ["1234567890123456789012345"]
        for huge in (b"1e400", b"[1e5000]", b"1e131072", b"9" * 5000):
            refused = await api.client.post("/api/v1/push", content=body(huge), headers=headers)
            assert refused.status_code == 400, (huge[:20], refused.text)
            assert "Invalid JSON" in refused.json()["error"]
        popped = await api.pop(queue)
        assert popped is not None and len(popped["messages"]) == 1


async def test_fused_pushes_number_their_results_within_each_request(
    pg_cluster: PgCluster, database: str
) -> None:
    """Quirk Q15: `index` is the item's position in its own request, also when the batcher
    fused that request with others into one database call. A held row lock keeps a first push
    in flight, so the next requests are held (up to SIDECAR_MICRO_BATCH_WAIT_MS) and fused."""
    queue = unique()
    with running_server(pg_cluster, database, SIDECAR_MICRO_BATCH_WAIT_MS="3000") as server:
        async with Api(server.url) as api:
            await api.push(queue, [0], partition="p")

            probes = 0

            async def requests_seen() -> int:
                """Requests that reached the server, not counting these probes."""
                nonlocal probes
                probes += 1
                _, body = await api.request("GET", "/metrics")
                return int(body["requests"]["total"]) - probes

            answers: dict[str, list[int]] = {}

            async def push(name: str, count: int) -> None:
                results = await api.push(queue, list(range(count)), partition="p")
                assert all(r["status"] == "queued" for r in results)
                answers[name] = [r["index"] for r in results]

            lock_sql = (
                "SELECT 1 FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id "
                "WHERE q.name = $1 FOR UPDATE OF p"
            )
            async with trio.open_nursery() as nursery:
                with HeldRowLock(pg_cluster, database, lock_sql, queue):
                    nursery.start_soon(push, "first", 1)

                    def push_waits() -> bool:
                        return sessions_waiting_for_a_lock(pg_cluster, database) == 1

                    await trio.to_thread.run_sync(wait_until, push_waits, 10.0, "a push held")
                    seen = await requests_seen()
                    for name in ("b", "c", "d", "e"):
                        nursery.start_soon(push, name, 3)
                    with trio.fail_after(10):
                        while await requests_seen() < seen + 4:  # noqa: ASYNC110 (polling HTTP)
                            await trio.sleep(0.02)
    assert answers == {"first": [0], "b": [0, 1, 2], "c": [0, 1, 2], "d": [0, 1, 2], "e": [0, 1, 2]}


async def test_push_batch_refuses_inconsistent_calls_and_stores_nothing(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """Direct callers of queen.push_batch that get its arguments wrong get an error, not a
    partition whose last_seq lags behind what was stored (which would break the next push)."""
    queue = unique()
    sql = "SELECT * FROM queen.push_batch($1, $2, $3, $4, $5, $6, $7, NULL, $8, NULL, NULL, NULL)"
    message_id = str(uuid.uuid4())

    def call(counts: list[int], offsets: str, payloads: str) -> None:
        run_sql(
            pg_cluster,
            sql,
            [queue],
            ["Default"],
            counts,
            "1",
            offsets,
            ["t1"],
            [message_id],
            payloads,
            database=database,
        )

    for counts, offsets, payloads in (([2], "1", "{}"), ([1], "1", "{}\x1e{}"), ([1], "1,2", "{}")):
        try:
            call(counts, offsets, payloads)
        except asyncpg.PostgresError as error:
            assert "push_batch" in str(error)
        else:
            raise AssertionError(f"accepted counts={counts} offsets={offsets!r}")
    stored = run_sql(
        pg_cluster,
        "SELECT count(*) AS n FROM queen.messages m "
        "JOIN queen.partitions p ON p.id = m.partition_id "
        "JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1",
        queue,
        database=database,
    )
    assert stored[0]["n"] == 0
    call([1], "1", "{}")  # the consistent call goes through
