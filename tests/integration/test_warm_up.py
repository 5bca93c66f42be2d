"""The warm-up round a new hot connection runs before it serves (queen/actors/warm_up.py), on a
real database: it goes through push, pop, renew and ack with the lanes' own procedures, leaves
nothing behind, and leaves the connection outside any transaction with the lanes' statements
prepared. A round that does not go through raises WarmUpFailed, which fails this test."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from queen.actors.warm_up import warm_up
from queen.db import push_batch
from queen.db.connect import ConnectParams, connect
from queen.storage.pgcluster import PgCluster
from tests.support import ServerProcess, run_sql


def _on_its_own_loop(cluster: PgCluster, database: str) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        parts = cluster.dsn_parts()
        params = ConnectParams(
            str(parts["host"]),
            int(parts["port"]),
            str(parts["user"]),
            str(parts["password"]),
            database,
            ssl=False,
            connect_timeout_s=10.0,
        )
        conn = await connect(params)
        try:
            await warm_up(conn)
            await warm_up(conn)  # a second round on the same session works as the first
            prepared = await conn.fetch("SELECT statement FROM pg_prepared_statements")
            return {
                "in_transaction": conn.is_in_transaction(),
                "prepared": {row["statement"] for row in prepared},
            }
        finally:
            await conn.close()

    # asyncio.run refuses to run inside trio once trio_asyncio is imported: a thread of its own.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, go()).result()


async def test_warm_up_goes_round_and_leaves_nothing(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    before = run_sql(pg_cluster, "SELECT count(*) AS n FROM queen.queues", database=database)
    outcome = _on_its_own_loop(pg_cluster, database)
    assert outcome["in_transaction"] is False
    assert push_batch.SQL in outcome["prepared"], "the push statement is prepared for the lane"
    after = run_sql(pg_cluster, "SELECT count(*) AS n FROM queen.queues", database=database)
    assert after[0]["n"] == before[0]["n"], "the round's queue, messages and lease rolled back"
