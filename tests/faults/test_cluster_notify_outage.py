"""LISTEN/NOTIFY wake-ups survive a PostgreSQL restart: each instance's listening connection
notices it is gone, reconnects, and pushes on one instance wake pops on the other again."""

from __future__ import annotations

import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import new_database
from tests.integration.api import Api
from tests.integration.cluster_helpers import one_wake, shared_state
from tests.support import SLOW_RECHECK, ServerProcess, server_env


async def wait_listening(process: ServerProcess, listening: bool) -> None:
    """Listening again also means hearing the other instance again: each says hello when its
    connection is back, and a wake-up goes out only while another instance is heard."""
    with trio.fail_after(30):
        while True:
            state = await trio.to_thread.run_sync(lambda: shared_state(process))
            if state["running"] is listening and (state.get("instances_heard", 0) > 0) is listening:
                return
            await trio.sleep(0.1)


@pytest.mark.timeout(120)
async def test_wake_ups_resume_after_postgresql_restarts(own_cluster: PgCluster) -> None:
    database = await new_database(own_cluster)
    a = ServerProcess(server_env(own_cluster, database, **SLOW_RECHECK)).start()
    b = ServerProcess(server_env(own_cluster, database, **SLOW_RECHECK)).start()
    try:
        for process in (a, b):
            await wait_listening(process, True)
        await trio.to_thread.run_sync(own_cluster.stop)
        for process in (a, b):
            await wait_listening(process, False)
        await trio.to_thread.run_sync(own_cluster.start)
        for process in (a, b):
            await wait_listening(process, True)
        async with Api(a.url) as producer, Api(b.url) as consumer:
            latency, _, ids = await one_wake(producer, consumer)
        assert len(ids) == 1 and latency < 1.0  # the pop's own re-check is 5 s away
    finally:
        a.stop()
        b.stop()
