"""A worker loads quart (with flask, werkzeug and jinja2) and hypercorn only when a request needs
them (queen/http/lazy_app.py, queen/http/serving.py): what clients and probes call in steady state
is answered without either, the first requests left to quart are all answered however many arrive
together, and a handover is served as a fresh worker's very first request.

Whether a worker loaded them is read from its /proc maps, without asking the worker: jinja2 maps
markupsafe's C speedups and hypercorn maps multiprocessing's `_multiprocessing` extension, which
nothing else a worker imports maps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.http_reader import Client
from tests.integration.api import Api, unique
from tests.support import ServerProcess, running_server

pytestmark = pytest.mark.timeout(60)

QUART_MARK = "markupsafe/_speedups"
HYPERCORN_MARK = "_multiprocessing."
CONCURRENT_FIRST_REQUESTS = 16


@pytest.fixture
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    """A fresh single worker, so every request lands on the worker whose maps are read."""
    with running_server(pg_cluster, database, NUM_WORKERS="1") as process:
        yield process


def _maps(server: ServerProcess) -> str:
    (pid,) = server.worker_pids().values()
    return Path(f"/proc/{pid}/maps").read_text()


async def _get(server: ServerProcess, raw: bytes) -> int:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(20):
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            client = Client(stream)
            await client.send(raw)
            return (await client.answer())[0]


async def test_a_client_session_loads_neither_and_quart_loads_once_for_all(
    server: ServerProcess,
) -> None:
    queue = unique("lazy")
    async with Api(server.url) as api:
        status, _ = await api.request("POST", "/api/v1/configure", json={"queue": queue})
        assert status == 200
        await api.push(queue, [1, 2, 3])
        popped = await api.pop(queue, batch=3, wait="false")
        assert popped is not None and len(popped["messages"]) == 3
        first, *rest = popped["messages"]
        status, _ = await api.request(
            "POST", f"/api/v1/lease/{first['leaseId']}/extend", json={"seconds": 30}
        )
        assert status == 200
        await api.ack(first)
        batch = [
            {"transactionId": m["transactionId"], "partitionId": m["partitionId"]} for m in rest
        ]
        status, _ = await api.request("POST", "/api/v1/ack/batch", json={"acknowledgments": batch})
        assert status == 200
        for path in ("/health", "/metrics/prometheus"):
            assert (await api.client.get(path)).status_code == 200
    maps = _maps(server)
    assert QUART_MARK not in maps and HYPERCORN_MARK not in maps

    statuses: list[int] = []

    async def first_request() -> None:
        statuses.append(
            await _get(server, b"GET /api/v1/resources/queues HTTP/1.1\r\nHost: t\r\n\r\n")
        )

    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENT_FIRST_REQUESTS):
            nursery.start_soon(first_request)
    assert statuses == [200] * CONCURRENT_FIRST_REQUESTS
    assert QUART_MARK in _maps(server)  # (quart-trio imports hypercorn: both are in now)
    assert server.log_path.read_text().count("quart app loaded") == 1
    assert server.stop() == 0  # the lazily started app's lifespan ends with the worker's


async def test_a_handover_is_served_as_a_fresh_workers_first_request(
    server: ServerProcess,
) -> None:
    assert HYPERCORN_MARK not in _maps(server)
    assert await _get(server, b"GET /health HTTP/1.0\r\n\r\n") == 200
    maps = _maps(server)
    assert HYPERCORN_MARK in maps and QUART_MARK not in maps  # /health is the lean path's
    assert await _get(server, b"GET /api/v1/resources/queues HTTP/1.0\r\n\r\n") == 200
    assert server.stop() == 0
