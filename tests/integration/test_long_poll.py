"""Long-poll pops: parked until a push wakes them, 204 at the deadline, freed on disconnect.

The server here re-checks only every 5 s on its own (POP_WAIT_INITIAL_INTERVAL_MS=5000), so a pop
answered well inside that window can only have been woken by the push.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import SLOW_RECHECK, ServerProcess, running_server


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, **SLOW_RECHECK) as process:
        yield process


async def test_push_wakes_a_parked_pop(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        got: list[dict[str, object] | None] = []

        async def consumer() -> None:
            got.append(await api.pop(queue, wait=True, timeout=20000, batch=5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await api.wait_parked(1)
            pushed_at = trio.current_time()
            await api.push(queue, [{"wake": True}])
        woke_after = trio.current_time() - pushed_at
        assert got[0] is not None and got[0]["messages"][0]["data"] == {"wake": True}  # type: ignore[index]
        assert woke_after < 2.0, f"woken by the push, not by a 5 s re-check ({woke_after:.3f}s)"


async def test_deadline_answers_204(server: ServerProcess) -> None:
    async with Api(server.url) as api:
        started = trio.current_time()
        status, body = await api.request(
            "GET", f"/api/v1/pop/queue/{unique()}", params={"wait": "true", "timeout": "300"}
        )
        assert status == 204 and body is None
        assert trio.current_time() - started >= 0.3


async def test_a_client_that_disconnects_frees_its_parked_pop(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        with pytest.raises(httpx.ReadTimeout):
            async with httpx.AsyncClient(base_url=server.url, timeout=0.5) as impatient:
                await impatient.get(
                    f"/api/v1/pop/queue/{queue}", params={"wait": "true", "timeout": "20000"}
                )
        await api.push(queue, [{"for": "someone present"}])
        with trio.fail_after(10):
            popped = await api.pop(queue, wait=True, timeout=5000)
        assert popped is not None, "the message was not leased to the client that left"
