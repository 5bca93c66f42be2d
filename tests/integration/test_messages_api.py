"""Message administration over HTTP as an operator uses it: list and page through messages,
inspect and delete one, retry a dead-lettered message, move a poison message to the DLQ, clear a
queue, and watch the resource overview follow pushes and consumption. Every refusal is checked to
leave the database unchanged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import (
    SLOW_RECHECK,
    ServerProcess,
    create_database,
    run_sql,
    running_server,
    server_env,
)

QUEUE_MODE = "__QUEUE_MODE__"


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, **SLOW_RECHECK) as process:
        yield process


def message_path(message: dict[str, Any], action: str = "") -> str:
    path = f"/api/v1/messages/{message['partitionId']}/{message['transactionId']}"
    return f"{path}/{action}" if action else path


async def configure(api: Api, queue: str, **options: Any) -> None:
    status, body = await api.request(
        "POST", "/api/v1/configure", json={"queue": queue, "options": options}
    )
    assert status == 200, body


async def listing(api: Api, **params: Any) -> dict[str, Any]:
    status, body = await api.request("GET", "/api/v1/messages", params=params)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def detail(api: Api, message: dict[str, Any]) -> dict[str, Any]:
    status, body = await api.request("GET", message_path(message))
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def dead_letters(api: Api, queue: str) -> list[dict[str, Any]]:
    status, body = await api.request("GET", "/api/v1/dlq", params={"queue": queue})
    assert status == 200, body
    return body["messages"]  # type: ignore[no-any-return]


async def served_while_waiting(api: Api, queue: str, action: Any) -> tuple[list[Any], float]:
    """Park a long-poll on `queue`, run `action`, and return what the poll got and how long after
    the action it got it."""
    delivered: list[Any] = []

    async def consumer() -> None:
        popped = await api.pop(queue, wait=True, timeout=20_000)
        assert popped is not None
        delivered.extend(popped["messages"])

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await api.wait_parked(1)
            started = trio.current_time()
            await action()
    return delivered, trio.current_time() - started


async def pop_one(api: Api, queue: str, **params: Any) -> dict[str, Any]:
    popped = await api.pop(queue, **params)
    assert popped is not None, "expected a message"
    return popped["messages"][0]  # type: ignore[no-any-return]


async def test_list_filters_statuses_and_pages(server: ServerProcess) -> None:
    namespace = unique("ops")
    queue = f"{namespace}.billing"
    async with Api(server.url) as api:
        pushed_a = await api.push(queue, [{"n": n} for n in range(3)], partition="a")
        pushed_b = await api.push(queue, [{"n": n} for n in range(3, 5)], partition="b")
        all_ids = [r["transaction_id"] for r in pushed_a + pushed_b]

        everything = await listing(api, queue=queue)
        assert everything["total"] == 5
        assert [m["transactionId"] for m in everything["messages"]] == all_ids[::-1], "newest first"
        first = everything["messages"][0]
        assert first["queuePath"] == f"{queue}/b" and first["namespace"] == namespace
        assert first["task"] == "billing" and first["status"] == "pending"
        assert first["busStatus"] == {"consumedBy": 0, "totalGroups": 0}
        assert everything["mode"]["type"] == "none"

        seen: list[str] = []
        for offset in (0, 2, 4):
            paged = await listing(api, queue=queue, limit=2, offset=offset)
            assert paged["total"] == 5
            assert paged["pagination"] == {"limit": 2, "offset": offset}
            seen += [m["transactionId"] for m in paged["messages"]]
        assert seen == all_ids[::-1], "pages neither overlap nor skip"

        completed = await pop_one(api, queue, partition="a")
        assert (await api.ack(completed))["success"] is True
        leased = await api.pop(queue, partition="b", batch=1)
        assert leased is not None

        statuses = {
            m["transactionId"]: m["status"] for m in (await listing(api, queue=queue))["messages"]
        }
        assert statuses[completed["transactionId"]] == "completed"
        assert statuses[leased["messages"][0]["transactionId"]] == "processing"
        assert sorted(statuses.values()) == [
            "completed",
            "pending",
            "pending",
            "pending",
            "processing",
        ]
        for status, expected in (("completed", 1), ("processing", 1), ("pending", 3)):
            filtered = await listing(api, queue=queue, status=status)
            assert filtered["total"] == expected, status
            assert {m["status"] for m in filtered["messages"]} == {status}
        processing = (await listing(api, queue=queue, status="processing"))["messages"][0]
        assert processing["leaseExpiresAt"].endswith("Z")

        only_b = await listing(api, queue=queue, partition="b")
        assert only_b["total"] == 2 and only_b["mode"]["type"] == "queue"
        by_namespace = await listing(api, ns=namespace, task="billing")
        assert by_namespace["total"] == 5
        hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        assert (await listing(api, queue=queue, to=hour_ago))["total"] == 0
        assert (await listing(api, queue=queue, **{"from": hour_ago}))["total"] == 5


async def test_detail_shows_groups_and_delete_removes_the_message(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        trace_id = str(uuid.uuid4())
        await api.push(queue, [{"order": 7}], traceId=trace_id)
        in_group = await pop_one(api, queue, consumerGroup="audit")
        assert (await api.ack(in_group))["success"] is True

        shown = await detail(api, in_group)
        assert shown["payload"] == {"order": 7} and shown["traceId"] == trace_id
        assert shown["status"] == "completed", "the only group, audit, consumed it"
        assert shown["mode"] == {
            "hasQueueMode": False,
            "busGroupsCount": 1,
            "consumedByGroups": 1,
            "type": "bus",
        }
        assert shown["consumerGroups"] == [
            {"name": "audit", "consumed": True, "deadLettered": False, "leaseExpiresAt": None}
        ]
        assert shown["queueConfig"]["retryLimit"] == 3
        assert shown["errorMessage"] is None and shown["retryCount"] is None

        status, deleted = await api.request("DELETE", message_path(in_group))
        assert status == 200 and deleted["success"] is True
        assert deleted["message"] == "Message deleted successfully"
        status, body = await api.request("GET", message_path(in_group))
        assert (status, body) == (404, {"error": "Message not found"})
        status, body = await api.request("DELETE", message_path(in_group))
        assert (status, body) == (404, {"error": "Message not found"})
    rows = run_sql(
        pg_cluster,
        "SELECT count(*) AS n FROM queen.messages WHERE transaction_id = $1",
        in_group["transactionId"],
        database=database,
    )
    assert rows[0]["n"] == 0


async def test_retry_a_dead_lettered_message_and_consume_it_again(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await configure(api, queue, retryLimit=0)
        await api.push(queue, [{"job": "flaky"}])
        failing = await pop_one(api, queue)
        assert (await api.ack(failing, "failed", error="downstream 503"))["dlq"] is True
        assert await api.pop(queue) is None
        dead = await detail(api, failing)
        assert (dead["status"], dead["errorMessage"]) == ("dead_letter", "downstream 503")

        async def retry() -> None:
            status, retried = await api.request("POST", message_path(failing, "retry"))
            assert status == 200 and retried["success"] is True
            assert retried["groups"] == [
                {
                    "consumerGroup": QUEUE_MODE,
                    "action": "rewound",
                    "redelivered": 1,
                    "deadLettersRemoved": 1,
                }
            ]

        delivered, waited = await served_while_waiting(api, queue, retry)
        assert waited < 2.0, f"the retry woke the waiting consumer ({waited:.3f}s)"
        assert [m["transactionId"] for m in delivered] == [failing["transactionId"]]
        assert await dead_letters(api, queue) == []
        assert (await api.ack(delivered[0]))["success"] is True
        assert (await detail(api, failing))["status"] == "completed"


async def test_retry_replays_later_messages_the_group_already_consumed(
    server: ServerProcess,
) -> None:
    queue = unique()
    group = "billing"
    async with Api(server.url) as api:
        await configure(api, queue, retryLimit=0)
        await api.push(queue, [{"n": 1}, {"n": 2}, {"n": 3}])
        batch = await api.pop(queue, batch=3, consumerGroup=group)
        assert batch is not None
        first, *rest = batch["messages"]
        assert (await api.ack(first, "failed", error="bad"))["dlq"] is True
        for message in rest:
            assert (await api.ack(message))["success"] is True
        queue_mode = await api.pop(queue, batch=3)
        assert queue_mode is not None and len(queue_mode["messages"]) == 3
        await api.ack_batch(queue_mode["messages"])

        status, retried = await api.request(
            "POST", message_path(first, "retry"), json={"consumerGroup": group}
        )
        assert status == 200
        assert retried["groups"] == [
            {"consumerGroup": group, "action": "rewound", "redelivered": 3, "deadLettersRemoved": 1}
        ]
        again = await api.pop(queue, batch=10, consumerGroup=group)
        assert again is not None
        assert [m["data"]["n"] for m in again["messages"]] == [1, 2, 3], "replayed in order"
        assert await api.pop(queue) is None, "queue mode is not affected"

        await api.push(queue, [{"n": 4}])
        newest = (await listing(api, queue=queue, limit=1))["messages"][0]
        status, untouched = await api.request(
            "POST", message_path(newest, "retry"), json={"consumerGroup": group}
        )
        assert status == 200
        assert untouched["groups"][0]["action"] == "pending"
        assert untouched["groups"][0]["redelivered"] == 0


async def test_move_the_next_pending_message_to_the_dlq(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"poison": True}, {"fine": True}])
        listed = (await listing(api, queue=queue))["messages"]
        poison, fine = listed[1], listed[0]
        stuck = await api.pop(queue)
        assert (
            stuck is not None and stuck["messages"][0]["transactionId"] == poison["transactionId"]
        )

        status, refused = await api.request("POST", message_path(fine, "dlq"))
        assert status == 409 and "1 earlier message" in refused["error"]
        assert await dead_letters(api, queue) == []

        async def move_poison() -> None:
            status, moved = await api.request("POST", message_path(poison, "dlq"))
            assert status == 200 and moved["success"] is True and moved["alreadyInDlq"] is False

        delivered, waited = await served_while_waiting(api, queue, move_poison)
        assert [m["transactionId"] for m in delivered] == [fine["transactionId"]]
        assert waited < 2.0, f"releasing the lease woke the waiting consumer ({waited:.3f}s)"
        [dead] = await dead_letters(api, queue)
        assert (dead["transactionId"], dead["errorMessage"]) == (
            poison["transactionId"],
            "Moved to DLQ manually",
        )
        late = await api.ack(stuck["messages"][0])
        assert late["success"] is False and late["error"] == "Invalid or expired lease"

        status, again = await api.request("POST", message_path(poison, "dlq"))
        assert status == 200 and again["alreadyInDlq"] is True
        assert len(await dead_letters(api, queue)) == 1, "repeating the move changes nothing"

        status, audit = await api.request(
            "POST", message_path(poison, "dlq"), json={"consumerGroup": "audit", "error": "manual"}
        )
        assert status == 200 and audit["consumerGroup"] == "audit"
        groups = {d["consumerGroup"]: d["errorMessage"] for d in await dead_letters(api, queue)}
        assert groups == {QUEUE_MODE: "Moved to DLQ manually", "audit": "manual"}
        assert (await detail(api, poison))["status"] == "dead_letter"

        status, _ = await api.request(
            "POST", message_path(fine, "dlq"), json={"consumerGroup": "audit"}
        )
        assert status == 200, "fine is audit's next pending message"
        status, retried = await api.request("POST", message_path(poison, "retry"))
        assert status == 200, "without a group: every group that dead-lettered it"
        assert {(g["consumerGroup"], g["deadLettersRemoved"]) for g in retried["groups"]} == {
            (QUEUE_MODE, 1),
            ("audit", 2),
        }
        assert await dead_letters(api, queue) == []


async def test_moving_a_consumed_message_to_the_dlq_is_refused(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"x": 1}])
        done = await pop_one(api, queue)
        await api.ack(done)
        status, body = await api.request("POST", message_path(done, "dlq"))
        assert status == 409 and "already consumed" in body["error"]
        assert await dead_letters(api, queue) == []


async def test_clear_a_partition_then_the_whole_queue(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"a": n} for n in range(3)], partition="a")
        await api.push(queue, [{"b": n} for n in range(2)], partition="b")
        leased = await api.pop(queue, partition="a")
        assert leased is not None

        status, cleared = await api.request(
            "DELETE", f"/api/v1/queues/{queue}/clear", params={"partition": "b"}
        )
        assert status == 200
        assert (cleared["deletedMessages"], cleared["partitionsCleared"]) == (2, 1)
        assert (await listing(api, queue=queue))["total"] == 3

        status, cleared = await api.request("POST", f"/api/v1/queues/{queue}/clear")
        assert status == 200 and cleared["deletedMessages"] == 3
        assert (await listing(api, queue=queue))["total"] == 0
        assert await api.pop(queue) is None

        await api.push(queue, [{"after": "clear"}], partition="a")
        fresh = await pop_one(api, queue, partition="a")
        assert fresh["data"] == {"after": "clear"}, "the clear released the old lease"

        status, body = await api.request("DELETE", f"/api/v1/queues/{unique()}/clear")
        assert (status, body) == (404, {"error": "Queue not found"})
        status, body = await api.request(
            "DELETE", f"/api/v1/queues/{queue}/clear", params={"partition": "nope"}
        )
        assert (status, body) == (404, {"error": "Partition not found"})


@pytest.fixture
def fresh_server(pg_cluster: PgCluster) -> Iterator[ServerProcess]:
    """A server on an empty database of its own, so system-wide counts are exact."""
    process = ServerProcess(server_env(pg_cluster, create_database(pg_cluster))).start()
    try:
        yield process
    finally:
        process.stop()


async def test_overview_and_resource_summaries_follow_the_messages(
    fresh_server: ServerProcess,
) -> None:
    async def overview(api: Api) -> dict[str, Any]:
        status, body = await api.request("GET", "/api/v1/resources/overview")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async with Api(fresh_server.url) as api:
        empty = await overview(api)
        assert (empty["queues"], empty["partitions"], empty["namespaces"]) == (0, 0, 0)
        assert empty["messages"]["total"] == 0 and empty["lag"]["time"]["max"] == 0

        await api.push("shop.orders", [{"n": n} for n in range(4)], partition="eu")
        await api.push("shop.refunds", [{"n": 9}])
        await api.push("plain", [{"n": 10}])
        pushed = await overview(api)
        assert (pushed["queues"], pushed["partitions"]) == (3, 3)
        assert (pushed["namespaces"], pushed["tasks"]) == (2, 2)
        assert pushed["messages"]["total"] == 6 and pushed["messages"]["pending"] == 6
        assert pushed["lag"]["offset"]["max"] == 4
        assert pushed["throughput"]["ingestedPerSecond"] > 0

        batch = await api.pop("shop.orders", batch=2)
        assert batch is not None
        leased = await overview(api)
        assert leased["messages"]["processing"] == 2 and leased["messages"]["pending"] == 4

        await api.ack_batch(batch["messages"])
        acked = await overview(api)
        assert acked["messages"]["processing"] == 0 and acked["messages"]["pending"] == 4
        assert acked["messages"]["completed"] == 2
        assert acked["throughput"]["processedPerSecond"] > 0

        status, partitions = await api.request(
            "GET", "/api/v1/resources/partitions", params={"queue": "shop.orders"}
        )
        assert status == 200 and partitions["total"] == 1
        [eu] = partitions["partitions"]
        assert (eu["name"], eu["queue"], eu["namespace"], eu["task"]) == (
            "eu",
            "shop.orders",
            "shop",
            "orders",
        )
        assert eu["messages"] == {
            "total": 4,
            "pending": 2,
            "processing": 0,
            "completed": 2,
            "deadLetter": 0,
        }
        status, paged = await api.request(
            "GET", "/api/v1/resources/partitions", params={"limit": 1, "offset": 2}
        )
        assert status == 200 and paged["total"] == 3
        assert [p["queue"] for p in paged["partitions"]] == ["shop.refunds"]

        status, namespaces = await api.request("GET", "/api/v1/resources/namespaces")
        assert status == 200
        assert namespaces == {
            "namespaces": [
                {
                    "namespace": "plain",
                    "queues": 1,
                    "partitions": 1,
                    "messages": {"total": 1, "pending": 1},
                },
                {
                    "namespace": "shop",
                    "queues": 2,
                    "partitions": 2,
                    "messages": {"total": 5, "pending": 3},
                },
            ]
        }
        status, tasks = await api.request("GET", "/api/v1/resources/tasks")
        assert status == 200
        assert [(t["task"], t["messages"]["pending"]) for t in tasks["tasks"]] == [
            ("orders", 2),
            ("refunds", 1),
        ]


BAD_INPUT: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("GET", "/api/v1/messages/not-a-uuid/tx", {}, 400, "partitionId must be a UUID"),
    ("GET", "/api/v1/messages/{pid}/unknown", {}, 404, "Message not found"),
    ("DELETE", "/api/v1/messages/{pid}/unknown", {}, 404, "Message not found"),
    ("POST", "/api/v1/messages/{pid}/unknown/retry", {}, 404, "Message not found"),
    ("POST", "/api/v1/messages/{pid}/unknown/dlq", {}, 404, "Message not found"),
    ("DELETE", "/api/v1/messages/not-a-uuid/{tx}", {}, 400, "partitionId must be a UUID"),
    ("GET", "/api/v1/messages/{pid}/" + "t" * 256, {}, 400, "transactionId must be"),
    ("GET", "/api/v1/messages", {"params": {"status": "done"}}, 400, "status must be one of"),
    ("GET", "/api/v1/messages", {"params": {"limit": "-1"}}, 400, "limit must be between"),
    ("GET", "/api/v1/messages", {"params": {"limit": "0"}}, 400, "limit must be between"),
    ("GET", "/api/v1/messages", {"params": {"limit": "5000"}}, 400, "limit must be between"),
    ("GET", "/api/v1/messages", {"params": {"offset": "-3"}}, 400, "offset must not be negative"),
    ("GET", "/api/v1/messages", {"params": {"from": "yesterday"}}, 400, "from must be an ISO"),
    ("GET", "/api/v1/messages", {"params": {"queue": "q" * 256}}, 400, "queue must be 1 to 255"),
    (
        "POST",
        "/api/v1/messages/{pid}/{tx}/dlq",
        {"json": {"consumerGroup": 5}},
        400,
        "consumerGroup must be a string",
    ),
    (
        "POST",
        "/api/v1/messages/{pid}/{tx}/dlq",
        {"json": {"error": 5}},
        400,
        "error must be a string",
    ),
    ("POST", "/api/v1/messages/{pid}/{tx}/dlq", {"json": [1]}, 400, "must be a JSON object"),
    (
        "POST",
        "/api/v1/messages/{pid}/{tx}/dlq",
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
        400,
        "Invalid JSON",
    ),
    (
        "POST",
        "/api/v1/messages/{pid}/{tx}/retry",
        {"json": {"consumerGroup": "g" * 256}},
        400,
        "consumerGroup must be at most 255",
    ),
    ("DELETE", "/api/v1/queues/" + "q" * 256 + "/clear", {}, 400, "queue must be 1 to 255"),
    (
        "POST",
        "/api/v1/queues/{queue}/clear",
        {"json": {"partition": 7}},
        400,
        "partition must be a string",
    ),
    (
        "GET",
        "/api/v1/resources/partitions",
        {"params": {"limit": "-2"}},
        400,
        "limit must be between",
    ),
    (
        "POST",
        "/api/v1/messages/{pid}/{second}/dlq",
        {"json": {"consumerGroup": "late"}},
        409,
        "1 earlier message(s) are pending for consumer group late",
    ),
]


async def test_bad_input_is_refused_and_changes_nothing(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"keep": True}, {"keep": "too"}])
        second, message = (await listing(api, queue=queue))["messages"]
        values = {
            "pid": message["partitionId"],
            "tx": message["transactionId"],
            "second": second["transactionId"],
            "queue": queue,
        }
        for method, path, kwargs, status, error in BAD_INPUT:
            code, body = await api.request(method, path.format(**values), **kwargs)
            assert (code, error in body.get("error", "")) == (status, True), (method, path, body)
        still = await detail(api, message)
        assert still["status"] == "pending" and still["consumerGroups"] == []
        assert await dead_letters(api, queue) == []
        assert (await listing(api, queue=queue))["total"] == 2
    rows = run_sql(
        pg_cluster,
        "SELECT count(*) AS n FROM queen.partition_consumers WHERE partition_id = $1",
        uuid.UUID(message["partitionId"]),
        database=database,
    )
    assert rows[0]["n"] == 0, "no refused request left a cursor row behind"
