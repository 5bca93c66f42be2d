"""Delivery shaping: capacity (maxSize), delayed processing, window buffer, queue priority."""

from __future__ import annotations

from typing import Any

import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, run_sql


async def configure(api: Api, queue: str, **options: Any) -> None:
    body: dict[str, Any] = {"queue": queue, "options": options}
    for key in ("namespace", "task"):
        if key in options:
            body[key] = options.pop(key)
    status, result = await api.request("POST", "/api/v1/configure", json=body)
    assert status == 200, result


async def test_max_size_refuses_a_push_beyond_capacity(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await configure(api, queue, maxSize=3)
        await api.push(queue, [{"n": 1}, {"n": 2}])
        status, body = await api.request(
            "POST",
            "/api/v1/push",
            json={
                "items": [
                    {"queue": queue, "payload": {"n": 3}},
                    {"queue": queue, "payload": {"n": 4}},
                ]
            },
        )
        assert status == 409 and "is full" in body["error"]
        popped = await api.pop(queue, batch=10)
        assert popped is not None and [m["data"]["n"] for m in popped["messages"]] == [1, 2]
        await api.ack_batch(popped["messages"])
        await api.push(queue, [{"n": 3}, {"n": 4}, {"n": 5}])
        status, body = await api.request(
            "POST",
            "/api/v1/transaction",
            json={
                "operations": [{"type": "push", "items": [{"queue": queue, "payload": {"n": 6}}]}]
            },
        )
        assert status == 200 and body["success"] is False and "is full" in body["error"]


async def test_delayed_processing_hides_messages_until_due(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await configure(api, queue, delayedProcessing=3600)
        await api.push(queue, [{"later": True}])
        assert await api.pop(queue) is None, "invisible while delayed"
        run_sql(
            pg_cluster,
            "UPDATE queen.messages m SET created_at = now() - interval '2 hours' "
            "FROM queen.partitions p, queen.queues q WHERE m.partition_id = p.id "
            "AND p.queue_id = q.id AND q.name = $1",
            queue,
            database=database,
        )
        popped = await api.pop(queue)
        assert popped is not None and popped["messages"][0]["data"] == {"later": True}


async def test_window_buffer_serves_a_partition_once_it_is_quiet(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await configure(api, queue, windowBuffer=3600)
        await api.push(queue, [{"n": 1}, {"n": 2}])
        assert await api.pop(queue, batch=10) is None, "newest message too young: window open"
        run_sql(
            pg_cluster,
            "UPDATE queen.partitions p SET last_message_created_at = "
            "now() - interval '2 hours' FROM queen.queues q WHERE p.queue_id = q.id "
            "AND q.name = $1",
            queue,
            database=database,
        )
        popped = await api.pop(queue, batch=10)
        assert popped is not None and len(popped["messages"]) == 2


async def test_priority_orders_queues_in_namespace_pops(server: ServerProcess) -> None:
    namespace = unique("ns")
    low, high = f"{namespace}.low", f"{namespace}.high"
    async with Api(server.url) as api:
        await configure(api, low, priority=1, namespace=namespace, task="low")
        await configure(api, high, priority=9, namespace=namespace, task="high")
        await api.push(low, [{"from": "low"}])
        await api.push(high, [{"from": "high"}])
        order = []
        for _ in range(2):
            status, popped = await api.request(
                "GET", "/api/v1/pop", params={"namespace": namespace}
            )
            assert status == 200
            order.append(popped["queue"])
            await api.ack_batch(popped["messages"])
        assert order == [high, low]


async def test_long_poll_on_a_namespace_wakes_on_a_push_to_any_of_its_queues(
    server: ServerProcess,
) -> None:
    namespace = unique("ns")
    async with Api(server.url) as api:
        got: list[Any] = []

        async def consumer() -> None:
            got.append(
                await api.request(
                    "GET",
                    "/api/v1/pop",
                    params={"namespace": namespace, "wait": "true", "timeout": "10000"},
                )
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await api.push(f"{namespace}.orders", [{"x": 1}])
        status, body = got[0]
        assert status == 200 and body["messages"][0]["data"] == {"x": 1}
