"""One worker of a two-worker server is SIGKILLed under a push load: the parent restarts it,
clients that retry (same transactionIds) are served by the survivor meanwhile, and every message
is stored exactly once.

A push in flight in the killed worker may or may not have committed; the client cannot know, so
it retries with the same transactionId and the database's dedup makes the retry harmless.
"""

from __future__ import annotations

import os
import signal
import time
from functools import partial

import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import (
    Ledger,
    alive,
    assert_exactly_once,
    eventually,
    new_database,
    push_load,
    report,
    served_by,
    stored_async,
)
from tests.integration.api import unique
from tests.support import ServerProcess, server_env

pytestmark = pytest.mark.faults

VICTIM = 0


async def test_worker_killed_under_load_is_restarted_and_nothing_is_lost(
    pg_cluster: PgCluster,
) -> None:
    database = await new_database(pg_cluster)
    server = ServerProcess(server_env(pg_cluster, database, NUM_WORKERS="2")).start()
    queue = unique("crash")
    ledger = Ledger()
    stop = trio.Event()
    try:
        await eventually(lambda: len(server.worker_pids()) == 2, 10, "two workers")
        before = server.worker_pids()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                partial(
                    push_load,
                    server.url,
                    queue,
                    ledger,
                    stop,
                    tag="w",
                    producers=6,
                    batch=2,
                    pace_s=0.02,
                    max_messages=3000,
                    retry_s=20.0,
                    partitions=4,
                )
            )
            await eventually(lambda: len(ledger.acknowledged) >= 100, 10, "a running load")
            acknowledged_at_kill = len(ledger.acknowledged)
            killed_at = time.monotonic()
            os.kill(before[VICTIM], signal.SIGKILL)
            await eventually(lambda: not alive(before[VICTIM]), 5, "the worker to die")

            def replaced() -> bool:
                now = server.worker_pids()
                return VICTIM in now and now[VICTIM] != before[VICTIM]

            await eventually(replaced, 15, "the parent to restart the worker")
            restarted_after = time.monotonic() - killed_at
            await eventually(
                partial(served_by, server.url, VICTIM), 15, "the new worker to serve", every_s=0
            )
            serving_after = time.monotonic() - killed_at
            target = len(ledger.acknowledged) + 100
            await eventually(lambda: len(ledger.acknowledged) >= target, 15, "more pushes")
            stop.set()
        after = server.worker_pids()
        rows = await stored_async(pg_cluster, database, queue)
    finally:
        server.stop()

    figures = report(
        "worker-crash",
        ledger,
        rows,
        acknowledged_at_kill=acknowledged_at_kill,
        restarted_after_s=round(restarted_after, 2),
        new_worker_serving_after_s=round(serving_after, 2),
        workers_before=before,
        workers_after=after,
    )
    assert_exactly_once(ledger, rows)
    assert figures["failed"] == 0 and figures["unanswered"] == 0, "every retry got an answer"
    assert set(ledger.acknowledged) == ledger.attempted
    assert after[1 - VICTIM] == before[1 - VICTIM], "the other worker was not touched"
