"""Every path that makes messages available wakes a long-poll parked in *another* worker process.

Two connections are pinned to two different workers (each client keeps one keep-alive
connection, and /health names the worker that answered it). The consumer parks on one worker, the
action runs on the other, and re-checks are slowed to 5 s: an answer well inside that window
can only come from the wake-up crossing between the workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import SLOW_RECHECK, ServerProcess, running_server

WOKEN_WITHIN_S = 2.0  # re-checks are 5 s apart: anything faster was a wake-up


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, NUM_WORKERS="2", **SLOW_RECHECK) as process:
        yield process


class PinnedApi(Api):
    """An Api whose every request travels on one connection, so on one worker."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=30,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    async def worker(self) -> int:
        status, body = await self.request("GET", "/health")
        assert status == 200, body
        return int(body["worker_id"])


@asynccontextmanager
async def on_two_workers(url: str) -> AsyncIterator[tuple[PinnedApi, PinnedApi]]:
    """A consumer and an actor connected to different workers."""
    opened: list[PinnedApi] = []
    try:
        with trio.fail_after(20):
            by_worker: dict[int, PinnedApi] = {}
            while len(by_worker) < 2:
                api = PinnedApi(url)
                opened.append(api)
                by_worker.setdefault(await api.worker(), api)
        yield by_worker[0], by_worker[1]
    finally:
        for api in opened:
            await api.client.aclose()


async def woken_by(
    consumer: PinnedApi, action: Callable[[], Awaitable[None]], queue: str, **pop: Any
) -> tuple[dict[str, Any], float]:
    """Park a long-poll on the consumer's worker, run `action`, return what the poll got and how
    long after the action it got it."""
    got: dict[str, Any] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:

            async def park() -> None:
                popped = await consumer.pop(queue, wait=True, timeout=15_000, **pop)
                assert popped is not None, "the wait ended without messages"
                got.update(popped)
                got["answered_at"] = trio.current_time()

            nursery.start_soon(park)
            await consumer_parked(consumer)
            acted_at = trio.current_time()
            await action()
    return got, got["answered_at"] - acted_at


async def consumer_parked(consumer: PinnedApi) -> None:
    """/metrics answers per worker; the pinned connection is busy with the pop, so ask on a fresh
    connection until one lands on a worker that shows a parked pop."""
    with trio.fail_after(10):
        while True:
            async with httpx.AsyncClient(base_url=str(consumer.client.base_url)) as probe:
                if (await probe.get("/metrics")).json()["longPolls"]["parked"] > 0:
                    return
            await trio.sleep(0.01)


async def configure(api: Api, queue: str, **options: Any) -> None:
    status, body = await api.request(
        "POST", "/api/v1/configure", json={"queue": queue, "options": options}
    )
    assert status == 200, body


async def test_a_push_wakes_the_other_worker(server: ServerProcess) -> None:
    queue = unique()
    async with on_two_workers(server.url) as (consumer, actor):

        async def push() -> None:
            await actor.push(queue, [{"n": 1}])

        got, waited = await woken_by(consumer, push, queue)
        assert len(got["messages"]) == 1 and waited < WOKEN_WITHIN_S, waited


async def test_a_transaction_push_wakes_the_other_worker(server: ServerProcess) -> None:
    queue = unique()
    async with on_two_workers(server.url) as (consumer, actor):

        async def transaction() -> None:
            status, body = await actor.request(
                "POST",
                "/api/v1/transaction",
                json={"operations": [{"type": "push", "items": [{"queue": queue, "payload": 1}]}]},
            )
            assert status == 200 and body["success"], body

        got, waited = await woken_by(consumer, transaction, queue)
        assert len(got["messages"]) == 1 and waited < WOKEN_WITHIN_S, waited


async def held_by_another_consumer(actor: Api, queue: str, count: int) -> dict[str, Any]:
    """`count` messages in one partition, the first leased by a consumer in group g."""
    await actor.push(queue, [{"n": n} for n in range(count)])
    held = await actor.pop(queue, batch=1, consumerGroup="g")
    assert held is not None
    return dict(held["messages"][0], leaseId=held["leaseId"], consumerGroup="g")


@pytest.mark.parametrize(
    ("status", "pushed", "expected"),
    [("completed", 2, {"n": 1}), ("failed", 1, {"n": 0})],
    ids=["ack-releases-the-lease", "failed-ack-retries"],
)
async def test_an_ack_wakes_the_other_worker(
    server: ServerProcess, status: str, pushed: int, expected: dict[str, int]
) -> None:
    """A completed ack frees the partition for the next message; a failed one redelivers."""
    queue = unique()
    async with on_two_workers(server.url) as (consumer, actor):
        held = await held_by_another_consumer(actor, queue, pushed)

        async def ack() -> None:
            extra = {"error": "try again"} if status == "failed" else {}
            assert (await actor.ack(held, status, **extra))["success"] is True

        got, waited = await woken_by(consumer, ack, queue, consumerGroup="g")
        assert got["messages"][0]["data"] == expected and waited < WOKEN_WITHIN_S, waited


async def test_a_dlq_move_wakes_the_other_worker(server: ServerProcess) -> None:
    queue = unique()
    async with on_two_workers(server.url) as (consumer, actor):
        held = await held_by_another_consumer(actor, queue, 2)

        async def move() -> None:
            path = f"/api/v1/messages/{held['partitionId']}/{held['transactionId']}/dlq"
            status, body = await actor.request(
                "POST", path, json={"consumerGroup": "g", "error": "poison"}
            )
            assert status == 200, body

        got, waited = await woken_by(consumer, move, queue, consumerGroup="g")
        assert got["messages"][0]["data"] == {"n": 1} and waited < WOKEN_WITHIN_S, waited


async def test_an_admin_retry_wakes_the_other_worker(server: ServerProcess) -> None:
    queue = unique()
    async with on_two_workers(server.url) as (consumer, actor):
        await configure(actor, queue, retryLimit=0)
        held = await held_by_another_consumer(actor, queue, 1)
        assert (await actor.ack(held, "failed", error="bad"))["dlq"] is True

        async def retry() -> None:
            path = f"/api/v1/messages/{held['partitionId']}/{held['transactionId']}/retry"
            status, body = await actor.request("POST", path, json={"consumerGroup": "g"})
            assert status == 200, body

        got, waited = await woken_by(consumer, retry, queue, consumerGroup="g")
        assert got["messages"][0]["data"] == {"n": 0} and waited < WOKEN_WITHIN_S, waited


async def consumed_by_g(actor: Api, queue: str) -> None:
    await actor.push(queue, [{"n": 0}])
    popped = await actor.pop(queue, consumerGroup="g")
    assert popped is not None
    message = dict(popped["messages"][0], leaseId=popped["leaseId"], consumerGroup="g")
    assert (await actor.ack(message))["success"] is True


async def test_a_seek_wakes_the_other_worker(server: ServerProcess) -> None:
    queue = unique()
    async with on_two_workers(server.url) as (consumer, actor):
        await consumed_by_g(actor, queue)

        async def seek() -> None:
            status, body = await actor.request(
                "POST",
                f"/api/v1/consumer-groups/g/queues/{queue}/seek",
                json={"timestamp": "2000-01-01T00:00:00Z"},
            )
            assert status == 200, body

        got, waited = await woken_by(consumer, seek, queue, consumerGroup="g")
        assert got["messages"][0]["data"] == {"n": 0} and waited < WOKEN_WITHIN_S, waited


@pytest.mark.parametrize("scope", ["queue", "everywhere"])
async def test_deleting_a_group_wakes_the_other_worker(server: ServerProcess, scope: str) -> None:
    queue = unique()
    async with on_two_workers(server.url) as (consumer, actor):
        await consumed_by_g(actor, queue)
        path = "/api/v1/consumer-groups/g" + (f"/queues/{queue}" if scope == "queue" else "")

        async def delete() -> None:
            status, body = await actor.request("DELETE", path)
            assert status == 200, body

        got, waited = await woken_by(
            consumer, delete, queue, consumerGroup="g", subscriptionMode="all"
        )
        assert got["messages"][0]["data"] == {"n": 0} and waited < WOKEN_WITHIN_S, waited
