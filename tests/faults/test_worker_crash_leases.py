"""A worker SIGKILLed while it holds a lease: its successor gives the lease back as it starts, so
the partition the dead worker had popped is poppable again right after the restart, not when the
lease expires (300 s here). The surviving worker's lease is left alone."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import alive, eventually, new_database
from tests.integration.api import Api, unique
from tests.support import ServerProcess, server_env

pytestmark = pytest.mark.faults

VICTIM, SURVIVOR = 0, 1
LEASE_TIME_S = 300


@asynccontextmanager
async def client_of(url: str, worker: int) -> AsyncIterator[Api]:
    """An Api whose (kept-alive) connection the kernel gave to `worker`."""
    with trio.fail_after(20):
        while True:
            api = Api(url)
            status, health = await api.request("GET", "/health")
            if status == 200 and health["worker_id"] == worker:
                break
            await api.client.aclose()
    try:
        yield api
    finally:
        await api.client.aclose()


async def pop_one(api: Api, queue: str, partition: str) -> dict[str, object] | None:
    result = await api.pop(queue, partition)
    if result is None:
        return None
    assert len(result["messages"]) == 1, result
    message: dict[str, object] = result["messages"][0]
    return message


async def test_a_crashed_workers_leases_are_released_when_it_restarts(
    pg_cluster: PgCluster,
) -> None:
    database = await new_database(pg_cluster)
    server = ServerProcess(server_env(pg_cluster, database, NUM_WORKERS="2")).start()
    queue = unique("crash-lease")
    try:
        await eventually(lambda: len(server.worker_pids()) == 2, 10, "two workers")
        before = server.worker_pids()
        async with Api(server.url) as api:
            status, body = await api.request(
                "POST",
                "/api/v1/configure",
                json={"queue": queue, "options": {"leaseTime": LEASE_TIME_S}},
            )
            assert status == 200, body
            for partition in ("victims", "survivors"):
                await api.push(queue, [{"p": partition}], partition=partition)
        async with client_of(server.url, VICTIM) as victim:
            held_by_victim = await pop_one(victim, queue, "victims")
        async with client_of(server.url, SURVIVOR) as survivor:
            held_by_survivor = await pop_one(survivor, queue, "survivors")
        assert held_by_victim is not None and held_by_survivor is not None

        killed_at = time.monotonic()
        os.kill(before[VICTIM], signal.SIGKILL)
        await eventually(lambda: not alive(before[VICTIM]), 5, "the worker to die")
        await eventually(
            lambda: server.worker_pids().get(VICTIM, before[VICTIM]) != before[VICTIM],
            15,
            "the parent to restart the worker",
        )

        async with Api(server.url) as api:
            redelivered: list[dict[str, object]] = []

            async def popped_again() -> bool:
                message = await pop_one(api, queue, "victims")
                if message is not None:
                    redelivered.append(message)
                return message is not None

            await eventually(popped_again, 20, "the dead worker's partition to be poppable")
            released_after = time.monotonic() - killed_at
            assert await pop_one(api, queue, "survivors") is None, "the survivor's lease holds"
    finally:
        server.stop()

    assert released_after < LEASE_TIME_S / 10
    assert redelivered[0]["transactionId"] == held_by_victim["transactionId"]
    assert redelivered[0]["leaseId"] != held_by_victim["leaseId"]
