"""What waiting pops may cost a worker: beyond QUEEN_MAX_PARKED_POPS a pop that would wait is
told to come back (503 with Retry-After) instead of parking, and a push wakes only the waiters it
concerns, so namespace/task consumers do not look again after every push to any queue.

Re-checks are 5 s apart here: a waiter answered well inside that was woken, and one that looked
again without a wake-up shows in /metrics' poll count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import SLOW_RECHECK, ServerProcess, running_server

CAP = 2


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(
        pg_cluster, database, QUEEN_MAX_PARKED_POPS=str(CAP), **SLOW_RECHECK
    ) as process:
        yield process


async def metrics(api: Api) -> dict[str, Any]:
    status, body = await api.request("GET", "/metrics")
    assert status == 200, body
    return dict(body["longPolls"])


async def scopes_known(api: Api) -> int:
    status, body = await api.request("GET", "/api/v1/system/shared-state")
    assert status == 200, body
    return int(body["queue_config_cache"]["size"])


async def wait_scopes_known(api: Api, count: int) -> None:
    with trio.fail_after(10):
        while True:
            if await scopes_known(api) >= count:
                return
            await trio.sleep(0.02)


async def wait_pop(api: Api, path: str, **params: str) -> tuple[int, Any]:
    return await api.request("GET", path, params={"wait": "true", "timeout": "15000", **params})


async def test_a_pop_that_would_wait_beyond_the_cap_is_told_to_retry(
    server: ServerProcess,
) -> None:
    queue = unique()
    path = f"/api/v1/pop/queue/{queue}"
    answers: list[tuple[int, Any]] = []
    async with Api(server.url) as api, trio.open_nursery() as nursery:

        async def park() -> None:
            answers.append(await wait_pop(api, path))

        for _ in range(CAP):
            nursery.start_soon(park)
        await api.wait_parked(CAP)

        response = await api.client.get(path, params={"wait": "true", "timeout": "15000"})
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"error": "Server busy: too many waiting pops, retry later"}
        assert await api.request("GET", path) == (204, None)  # not waiting: served as ever

        for partition in ("a", "b"):  # one partition is leased to one waiter at a time
            await api.push(queue, [partition], partition=partition)
    assert sorted(status for status, _ in answers) == [200, 200]
    async with Api(server.url) as api:
        assert (await metrics(api))["parked"] == 0


async def test_a_push_to_another_queue_leaves_namespace_waiters_alone(
    server: ServerProcess,
) -> None:
    namespace, watched, other = unique("ns"), unique(), unique()
    async with Api(server.url) as api:
        status, body = await api.request(
            "POST", "/api/v1/configure", json={"queue": watched, "namespace": namespace}
        )
        assert status == 200, body
        await api.push(other, ["before"])
        got: list[tuple[int, Any]] = []
        answered = trio.Event()
        async with trio.open_nursery() as nursery:

            async def park() -> None:
                got.append(await wait_pop(api, "/api/v1/pop", namespace=namespace))
                answered.set()

            nursery.start_soon(park)
            await api.wait_parked(1)
            # The first push to `other` while a namespace waiter is parked finds the queue's
            # scope unknown here: the waiter looks (any queue may be in the namespace) while
            # the worker looks the queue up. Pushes before that answer look too, so count from
            # when it is in (one worker here: /metrics and the scopes are that worker's).
            known = await scopes_known(api)
            await api.push(other, ["first"])
            await wait_scopes_known(api, known + 1)
            polls_before = (await metrics(api))["polls"]
            for n in range(10):
                await api.push(other, [n])
            # At most the first push's look, if it began after the count above.
            assert (await metrics(api))["polls"] - polls_before <= 1

            with trio.fail_after(2.0):  # re-checks are 5 s apart: this must be a wake-up
                await api.push(watched, ["wanted"])
                await answered.wait()
        [(status, body)] = got
        assert status == 200, body
        assert [m["data"] for m in body["messages"]] == ["wanted"]
