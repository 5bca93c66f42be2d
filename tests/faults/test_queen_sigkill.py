"""queen is SIGKILLed (parent and every worker) while pushes wait in the disk buffer: the next
queen started on the same FILE_BUFFER_DIR replays every one of them exactly once.

PostgreSQL is stopped first so that pushes are buffered; some files are finalized and already
moved to failed/ by a replay attempt, the active one is still `.buf.tmp` when the kill lands, and
requests are in flight. A request whose answer the kill swallowed may or may not have been
written; it must then be stored at most once.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import (
    Ledger,
    alive,
    assert_exactly_once,
    buffer_files,
    eventually,
    new_database,
    push_batch,
    push_load,
    records_on_disk,
    report,
    sigkill_server,
    wait_drained,
)
from tests.integration.api import unique
from tests.support import ServerProcess, server_env

pytestmark = pytest.mark.faults


async def test_sigkill_with_pushes_in_the_buffer(own_cluster: PgCluster) -> None:
    cluster = own_cluster
    database = await new_database(cluster)
    env = server_env(cluster, database)
    root = Path(env["FILE_BUFFER_DIR"])
    first = ServerProcess(env).start()
    queue = unique("sigkill")
    ledger = Ledger()
    stop = trio.Event()
    second: ServerProcess | None = None
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=10.0) as client:
            await push_batch(client, queue, [f"before-{n}" for n in range(20)], ledger)
            await trio.to_thread.run_sync(cluster.stop)
            for n in range(10):
                await push_batch(client, queue, [f"early-{n}-{k}" for k in range(10)], ledger)
            # The drain loop finalizes the idle file and its replay fails into failed/.
            await eventually(lambda: buffer_files(root).get("failed", 0) >= 1, 10, "a failed file")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    push_load,
                    first.url,
                    queue,
                    ledger,
                    stop,
                    tag="late",
                    producers=4,
                    batch=5,
                    pace_s=0.01,
                    max_messages=2000,
                )
            )
            await eventually(lambda: ledger.buffered >= 250, 20, "a buffered load")
            files_at_kill = buffer_files(root)
            victims = sigkill_server(first)
            killed_at = time.monotonic()
            await eventually(lambda: not any(alive(pid) for pid in victims), 5, "the kill")
            stop.set()
        assert first.process is not None
        first.process.wait()
        buffered_before_restart = ledger.buffered
        on_disk = records_on_disk(root)
        # The new queen comes up while PostgreSQL is still down: it must see the whole buffer.
        second = ServerProcess(env).start(wait_healthy=False)
        second.wait_health(503)
        async with httpx.AsyncClient(base_url=second.url, timeout=10.0) as client:
            pending_at_start = (await client.get("/health")).json()["fileBuffer"]["pending"]
            await trio.to_thread.run_sync(cluster.start)
            restarted_at = time.monotonic()
            rows = await wait_drained(
                client, cluster, database, queue, expected=set(ledger.acknowledged)
            )
            replay_s = round(time.monotonic() - restarted_at, 2)
    finally:
        first.stop()
        if second is not None:
            second.stop()

    figures = report(
        "queen-sigkill",
        ledger,
        rows,
        workers_killed=len(victims) - 1,
        files_at_kill=files_at_kill,
        buffered_before_kill=buffered_before_restart,
        records_on_disk=on_disk,
        pending_at_restart=pending_at_start,
        replayed_within_s=replay_s,
        killed_to_drained_s=round(time.monotonic() - killed_at, 1),
    )
    assert_exactly_once(ledger, rows)
    assert figures["failed"] == 0
    assert files_at_kill.get("failed", 0) >= 1 and files_at_kill.get("main.tmp", 0) == 1
    assert figures["buffered"] >= 250
    assert pending_at_start == on_disk >= buffered_before_restart
