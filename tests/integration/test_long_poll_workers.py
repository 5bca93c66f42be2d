"""Long-polls across worker processes: a push served by one worker wakes pops parked in another.

Connections are spread over the two workers by the kernel (SO_REUSEPORT), so over several rounds
consumer and producer land on different workers; with re-checks slowed to 5 s, every answer well
inside that window was a cross-worker wake-up.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import unique
from tests.integration.cluster_helpers import wait_parked_in_some_worker
from tests.support import SLOW_RECHECK, ServerProcess, running_server

ROUNDS = 8


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, NUM_WORKERS="2", **SLOW_RECHECK) as process:
        yield process


async def one_round(url: str) -> float:
    """Park a pop on one connection, push on another; seconds from the push to the answer."""
    queue = unique()
    result: dict[str, httpx.Response] = {}
    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as consumer,
        httpx.AsyncClient(base_url=url, timeout=30) as producer,
    ):

        async def pop() -> None:
            result["pop"] = await consumer.get(
                f"/api/v1/pop/queue/{queue}", params={"wait": "true", "timeout": "20000"}
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pop)
            await wait_parked_in_some_worker(url)
            pushed_at = trio.current_time()
            response = await producer.post(
                "/api/v1/push", json={"items": [{"queue": queue, "payload": {"x": 1}}]}
            )
            assert response.status_code == 201
    assert result["pop"].status_code == 200
    return trio.current_time() - pushed_at


async def test_a_push_in_one_worker_wakes_a_pop_parked_in_another(server: ServerProcess) -> None:
    answered_after = [await one_round(server.url) for _ in range(ROUNDS)]
    print(f"answered after push (s): {[round(t, 3) for t in answered_after]}")
    assert max(answered_after) < 2.0, answered_after
