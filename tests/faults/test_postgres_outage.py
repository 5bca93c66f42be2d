"""PostgreSQL stops under a steady push load and comes back: no acknowledged push is lost.

While the database is gone the push path fails over to the fsynced disk buffer (201 `buffered`);
once it is back the drain loop replays the buffer through the normal push path, deduplicated by
transactionId. The test counts every message on both sides.
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
    assert_exactly_once,
    buffer_files,
    eventually,
    new_database,
    push_load,
    report,
    wait_drained,
)
from tests.integration.api import unique
from tests.support import ServerProcess, server_env

pytestmark = pytest.mark.faults

OUTAGE_S = 5.0


async def test_postgres_outage_under_push_load(own_cluster: PgCluster) -> None:
    cluster = own_cluster
    database = await new_database(cluster)
    env = server_env(cluster, database)
    server = ServerProcess(env).start()
    queue = unique("outage")
    ledger = Ledger()
    stop = trio.Event()
    outage: dict[str, float] = {}
    seen: dict[str, object] = {}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(
                        push_load,
                        server.url,
                        queue,
                        ledger,
                        stop,
                        tag="o",
                        producers=4,
                        batch=2,
                        pace_s=0.1,
                        max_messages=1600,
                        partitions=3,
                    )
                )
                await eventually(lambda: len(ledger.acknowledged) >= 60, 10, "a healthy load")
                await trio.to_thread.run_sync(cluster.stop)
                outage["stopped"] = time.monotonic()
                await eventually(lambda: ledger.buffered >= 20, 10, "pushes to fail over")
                health = await client.get("/health")
                seen["health_during_outage"] = health.status_code
                seen["buffer_during_outage"] = health.json()["fileBuffer"]
                await trio.sleep(OUTAGE_S)  # the outage itself: a deliberate duration
                outage["restarting"] = time.monotonic()
                await trio.to_thread.run_sync(cluster.start)
                outage["restarted"] = time.monotonic()

                def stored_again() -> bool:
                    return any(
                        at > outage["restarted"] and "queued" in statuses
                        for at, _, statuses in ledger.answers
                    )

                await eventually(stored_again, 20, "pushes to reach PostgreSQL again")
                stop.set()
            files_after_load = buffer_files(Path(env["FILE_BUFFER_DIR"]))
            rows = await wait_drained(
                client, cluster, database, queue, expected=set(ledger.acknowledged)
            )
            metrics = (await client.get("/metrics")).json()["fileBuffer"]
    finally:
        server.stop()

    during = [
        statuses
        for at, _, statuses in ledger.answers
        if outage["stopped"] + 0.2 < at < outage["restarting"]
    ]
    figures = report(
        "postgres-outage",
        ledger,
        rows,
        outage_s=round(outage["restarted"] - outage["stopped"], 1),
        answers_during_outage=len(during),
        files_after_load=files_after_load,
        health_during_outage=seen["health_during_outage"],
        buffer_during_outage=seen["buffer_during_outage"],
        buffer_after=metrics,
    )
    assert_exactly_once(ledger, rows)
    assert figures["failed"] == 0 and figures["unanswered"] == 0, "every push answered 2xx"
    assert set(ledger.http_codes) == {201}, ledger.http_codes
    assert during and all(s == "buffered" for statuses in during for s in statuses)
    assert seen["health_during_outage"] == 503
    assert seen["buffer_during_outage"]["pending"] > 0  # type: ignore[index]
    assert metrics["pending"] == 0 and metrics["dbHealthy"] is True
