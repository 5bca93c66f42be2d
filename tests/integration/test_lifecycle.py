"""The process tree of `queen serve` over its life: a stop answers what is in flight and leaves
nothing running, a dead worker comes back without disturbing the rest, and workers never outlive
their parent. Requests are held in flight on purpose: long-poll pops parked in a consumer group,
and /health probes stuck on a database link the test has paused."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.support import (
    PausableProxy,
    ProcessInfo,
    ServerProcess,
    alive,
    descendants,
    server_env,
    still_running,
    wait_until,
)

STOP_BOUND_S = 15.0
# Parked pops must not re-check the (paused) database while the test holds them.
SLOW_RECHECK = {"POP_WAIT_INITIAL_INTERVAL_MS": "60000", "POP_WAIT_MAX_INTERVAL_MS": "60000"}


@pytest.fixture
def proxy(pg_cluster: PgCluster) -> Iterator[PausableProxy]:
    relay = PausableProxy(pg_cluster.port)
    try:
        yield relay
    finally:
        relay.close()


def leftovers(tree: list[ProcessInfo], server_pid: int) -> list[ProcessInfo]:
    """Processes of the server still alive: its recorded tree, and any worker naming it parent."""
    workers = [
        info
        for info in ServerProcess.scan_workers(server_pid)
        if info.pid not in {t.pid for t in tree}
    ]
    return still_running(tree) + workers


class InFlight:
    """Requests fired at the server on fresh connections, and what each one was answered."""

    def __init__(self, server: ServerProcess) -> None:
        self.client = httpx.AsyncClient(
            base_url=server.url, timeout=30.0, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.answers: list[tuple[str, int | str]] = []
        self.metrics_polls = 0

    async def request(self, path: str, params: dict[str, str] | None = None) -> None:
        label = "pop" if "/pop/" in path else path
        try:
            response = await self.client.get(path, params=params)
        except httpx.HTTPError as error:
            self.answers.append((label, type(error).__name__))
            return
        json.loads(response.content or b"null")  # every answer is JSON or empty
        self.answers.append((label, response.status_code))

    async def metrics(self) -> tuple[int, int]:
        """(requests that reached the app, long-polls parked) in the worker answering."""
        self.metrics_polls += 1
        body: dict[str, Any] = (await self.client.get("/metrics")).json()
        return body["requests"]["total"], body.get("longPolls", {}).get("parked", 0)

    async def wait_entered(self, baseline: int, count: int, parked: int) -> None:
        """Until `count` requests after `baseline` reached the app and `parked` pops wait."""
        polls_before = self.metrics_polls
        with trio.fail_after(10):
            while True:
                total, parked_now = await self.metrics()
                mine = self.metrics_polls - polls_before
                if total - baseline - mine >= count and parked_now >= parked:
                    return
                await trio.sleep(0.02)

    async def request_total(self) -> int:
        return (await self.metrics())[0]


@pytest.mark.timeout(90)
async def test_sigterm_answers_requests_in_flight_and_leaves_no_process(
    pg_cluster: PgCluster, database: str, proxy: PausableProxy
) -> None:
    env = server_env(
        pg_cluster, database, PG_PORT=str(proxy.port), LOG_FORMAT="json", **SLOW_RECHECK
    )
    server = ServerProcess(env)
    await trio.to_thread.run_sync(server.start)
    try:
        tree = descendants(server.pid)
        assert len(ServerProcess.scan_workers(server.pid)) == 1
        in_flight = InFlight(server)
        async with in_flight.client, trio.open_nursery() as nursery:
            baseline = await in_flight.request_total()
            for n in range(3):
                nursery.start_soon(
                    in_flight.request,
                    f"/api/v1/pop/queue/lifecycle-{n}",
                    {"wait": "true", "timeout": "30000"},
                )
            await in_flight.wait_entered(baseline, count=3, parked=3)
            proxy.pause()  # from here on every database call hangs until its timeout
            for _ in range(4):
                nursery.start_soon(in_flight.request, "/health")
            await in_flight.wait_entered(baseline, count=7, parked=3)

            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert server.process is not None
            code = await trio.to_thread.run_sync(server.process.wait, STOP_BOUND_S)
            stopped_in_s = time.monotonic() - signalled

        assert code == 0
        assert stopped_in_s < STOP_BOUND_S
        assert sorted(in_flight.answers, key=str) == sorted(
            [("pop", 204)] * 3 + [("/health", 503)] * 4, key=str
        )
        assert leftovers(tree, server.pid) == []
    finally:
        proxy.resume()
        server.stop()
    lines = server.log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # LOG_FORMAT=json: every line is one object
    assert all({"ts", "level", "logger", "msg"} <= entry.keys() for entry in entries)
    assert any(entry["msg"] == "queen stopped" for entry in entries)


@pytest.mark.timeout(90)
async def test_second_signal_stops_at_once_and_kills_the_workers(
    pg_cluster: PgCluster, database: str, proxy: PausableProxy
) -> None:
    server = ServerProcess(server_env(pg_cluster, database, PG_PORT=str(proxy.port)))
    await trio.to_thread.run_sync(server.start)
    try:
        tree = descendants(server.pid)
        in_flight = InFlight(server)
        async with in_flight.client, trio.open_nursery() as nursery:
            baseline = await in_flight.request_total()
            proxy.pause()
            for _ in range(4):
                nursery.start_soon(in_flight.request, "/health")
            await in_flight.wait_entered(baseline, count=4, parked=0)
            server.signal(signal.SIGTERM)
            # Signals sent back to back may be delivered as one; the second must come after.
            await trio.to_thread.run_sync(
                wait_until, lambda: "shutting down" in server.log(), 5.0, "the first signal"
            )
            server.signal(signal.SIGTERM)
            assert server.process is not None
            code = await trio.to_thread.run_sync(server.process.wait, STOP_BOUND_S)
            # The parent reaps its workers before it exits: none may be found running now.
            assert leftovers(tree, server.pid) == []
        assert code == 0
    finally:
        proxy.resume()
        server.stop()


def _serving_worker_ids(server: ServerProcess, attempts: int = 40) -> set[int]:
    """Worker ids seen on fresh connections (SO_REUSEPORT spreads them by source port)."""
    seen = set()
    for _ in range(attempts):
        response = httpx.get(f"{server.url}/health", timeout=5.0)
        assert response.status_code == 200
        seen.add(response.json()["worker_id"])
    return seen


@pytest.mark.timeout(90)
def test_killed_worker_is_restarted_and_nothing_else_is_disturbed(
    pg_cluster: PgCluster, database: str
) -> None:
    server = ServerProcess(server_env(pg_cluster, database, NUM_WORKERS="2")).start()
    try:
        wait_until(lambda: len(server.worker_pids()) == 2, 10.0, "two workers")
        wait_until(lambda: _serving_worker_ids(server) == {0, 1}, 20.0, "both workers serving")
        before = server.worker_pids()

        os.kill(before[0], signal.SIGKILL)
        wait_until(lambda: not alive(before[0]), 5.0, "the killed worker to be gone")
        # Meanwhile the other worker answers every request, on every new connection.
        assert _serving_worker_ids(server, attempts=20) <= {0, 1}

        wait_until(
            lambda: server.worker_pids().get(0) not in (None, before[0]),
            10.0,
            "worker 0 to be started again",
        )
        assert server.worker_pids()[1] == before[1]
        wait_until(lambda: 0 in _serving_worker_ids(server), 20.0, "worker 0 serving again")
        assert server.process is not None and server.process.poll() is None
        assert "worker exited; restarting" in server.log()
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_workers_of_a_killed_server_stop_by_themselves(
    pg_cluster: PgCluster, database: str
) -> None:
    server = ServerProcess(server_env(pg_cluster, database, NUM_WORKERS="2")).start()
    try:
        wait_until(lambda: len(server.worker_pids()) == 2, 10.0, "two workers")
        workers = [info for info in descendants(server.pid) if "worker" in info.cmdline]
        server.signal(signal.SIGKILL)
        wait_until(lambda: not still_running(workers), STOP_BOUND_S, "orphaned workers to stop")
        assert server.health_status() is None  # nobody serves the port any more
    finally:
        server.stop()


def test_a_second_instance_on_the_same_port_refuses_to_start(server: ServerProcess) -> None:
    second = ServerProcess({**server.env, "FILE_BUFFER_DIR": tempfile.mkdtemp()}, port=server.port)
    second.start(wait_healthy=False)
    assert second.process is not None
    assert second.process.wait(30) == 1
    assert "is in use" in second.log()


def test_the_serve_parent_maps_neither_ssl_nor_libcrypto(server: ServerProcess) -> None:
    """The parent supervises and nothing more: trio's ssl (and OpenSSL with it) belongs to the
    workers, some 11 MB of RSS the parent would hold for the server's whole life."""
    maps = Path(f"/proc/{server.pid}/maps").read_text()
    assert "_ssl." not in maps and "libssl" not in maps and "libcrypto" not in maps
    assert "_ssl." in Path(f"/proc/{server.worker_pids()[0]}/maps").read_text()
