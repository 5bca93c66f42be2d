"""The network between queen and PostgreSQL stalls (packets held, nothing refused, nothing
closed) under a push load: pushes must still be answered, by failing over to disk once a call has
outlived the in-flight deadline (DB_STATEMENT_TIMEOUT + 5 s), and nothing may be lost or doubled.

The sharpest edge comes first: a push that PostgreSQL commits while its reply is held by the
stalled network. queen cannot know it committed; it buffers the push at the deadline and answers
`buffered`. When the network comes back the replay must be a duplicate of the committed row, not a
second message.
"""

from __future__ import annotations

import time
from functools import partial

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import (
    HeldRowLock,
    Ledger,
    assert_exactly_once,
    eventually,
    new_database,
    push_batch,
    push_load,
    report,
    sql,
    stored_async,
    wait_drained,
)
from tests.integration.api import unique
from tests.support import PausableProxy, ServerProcess, server_env

pytestmark = pytest.mark.faults

STATEMENT_TIMEOUT_MS = 1000
DEADLINE_S = STATEMENT_TIMEOUT_MS / 1000 + 5
STALL_S = DEADLINE_S + 3  # longer than the deadline, so only the deadline can answer in time
EDGE = "committed-behind-the-stall"


async def test_stalled_network_fails_over_to_disk_and_loses_nothing(
    own_cluster: PgCluster,
) -> None:
    cluster = own_cluster
    database = await new_database(cluster)
    proxy = PausableProxy(cluster.port)
    # One hot connection: it is established (and then stalls) before the load, so pushes do meet
    # the stalled connection instead of only fresh slots that time out connecting.
    env = server_env(
        cluster,
        database,
        PG_PORT=str(proxy.port),
        DB_STATEMENT_TIMEOUT=str(STATEMENT_TIMEOUT_MS),
        SIDECAR_POOL_SIZE="1",
    )
    server = ServerProcess(env).start()
    queue = unique("stall")
    ledger = Ledger()
    stop = trio.Event()
    timing: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
            await push_batch(client, queue, [f"before-{n}" for n in range(20)], ledger)
            async with trio.open_nursery() as nursery:
                with HeldRowLock(
                    cluster,
                    database,
                    "SELECT 1 FROM queen.partitions p JOIN queen.queues q ON q.id = p.queue_id "
                    "WHERE q.name = $1 FOR UPDATE OF p",
                    queue,
                ):
                    nursery.start_soon(push_batch, client, queue, [EDGE], ledger)

                    async def push_waits_on_lock() -> bool:
                        rows = await sql(
                            cluster,
                            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 "
                            "AND application_name = 'queen-w0' AND wait_event_type = 'Lock'",
                            database,
                        )
                        return bool(rows[0]["n"] == 1)

                    await eventually(push_waits_on_lock, 10, "the push to wait inside PostgreSQL")
                    proxy.pause()
                    timing["paused"] = time.monotonic()

                # The lock is gone: PostgreSQL commits the push, its reply stays in the proxy.
                async def edge_committed() -> bool:
                    return EDGE in await stored_async(cluster, database, queue)

                await eventually(edge_committed, 10, "the edge push to commit")
                nursery.start_soon(
                    partial(
                        push_load,
                        server.url,
                        queue,
                        ledger,
                        stop,
                        tag="s",
                        producers=3,
                        batch=2,
                        pace_s=0.05,
                        max_messages=1200,
                    )
                )
                await eventually(
                    lambda: EDGE in ledger.acknowledged, DEADLINE_S + 5, "the edge push's answer"
                )
                timing["edge_answered"] = time.monotonic()
                await trio.sleep(STALL_S - (time.monotonic() - timing["paused"]))  # the stall
                proxy.resume()
                timing["resumed"] = time.monotonic()

                def stored_again() -> bool:
                    return any(
                        at > timing["resumed"] and "queued" in statuses
                        for at, _, statuses in ledger.answers
                    )

                await eventually(stored_again, 20, "pushes to reach PostgreSQL again")
                stop.set()
            rows = await wait_drained(
                client, cluster, database, queue, expected=set(ledger.acknowledged)
            )
    finally:
        proxy.resume()
        server.stop()
        proxy.close()

    figures = report(
        "network-stall",
        ledger,
        rows,
        edge_status=ledger.acknowledged.get(EDGE),
        edge_stored=rows[EDGE],
        edge_answered_after_s=round(timing["edge_answered"] - timing["paused"], 2),
        stall_s=round(timing["resumed"] - timing["paused"], 2),
        deadline_s=DEADLINE_S,
    )
    assert_exactly_once(ledger, rows)
    assert figures["failed"] == 0 and figures["unanswered"] == 0
    assert ledger.acknowledged[EDGE] == "buffered" and rows[EDGE] == 1
    assert ledger.slowest_s < DEADLINE_S + 2, "no push waits out the stall"
