"""Instances with no peer list (behind a plain load balancer) still wake each other, through
PostgreSQL LISTEN/NOTIFY; with that off too, a pop parked on another instance waits for its own
re-check. Long-polls here re-check every 5 s (1 s on the instance with sync off).

NOTIFY goes through PostgreSQL and a connection actor on each side, so it is slower than UDP (the
low-latency path when peers are listed); what it must do is beat the re-check by far.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import trio

from queen.actors.cluster import STATS_INTERVAL_S, WAKE_WINDOW_S
from queen.storage.pgcluster import PgCluster
from queen.sync.pg_notify import PRESUMED_S
from tests.integration.api import Api, unique
from tests.integration.cluster_helpers import one_wake, p99, shared_state, summary
from tests.support import (
    SLOW_RECHECK,
    ServerProcess,
    create_database,
    running_server,
    wait_until,
)

TRIES = 50
SYNC_OFF_TRIES = 3
SYNC_OFF = {
    "QUEEN_SYNC_PG_NOTIFY": "false",
    "POP_WAIT_INITIAL_INTERVAL_MS": "1000",
    "POP_WAIT_MAX_INTERVAL_MS": "1000",
}


@pytest.fixture(scope="module")
def a(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, **SLOW_RECHECK) as process:
        wait_until(lambda: shared_state(process)["running"], 10, "A listening")
        yield process


@pytest.fixture(scope="module")
def b(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, NUM_WORKERS="2", **SLOW_RECHECK) as process:
        wait_until(lambda: shared_state(process)["running"], 10, "B listening")
        yield process


@pytest.fixture(scope="module")
def quiet(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, **SYNC_OFF) as process:
        yield process


@pytest.mark.timeout(90)
async def test_a_push_wakes_another_instance_through_postgresql(
    a: ServerProcess, b: ServerProcess
) -> None:
    """B runs two workers: the NOTIFY reaches its worker 0, pops may be parked in worker 1."""
    wait_until(
        lambda: shared_state(a)["instances_heard"] > 0 and shared_state(b)["instances_heard"] > 0,
        10,
        "A and B hearing each other",
    )
    latencies: list[float] = []
    delivered: Counter[str] = Counter()
    async with Api(a.url) as producer, Api(b.url) as consumer:
        for _ in range(TRIES):
            latency, _, ids = await one_wake(producer, consumer, any_worker=True)
            latencies.append(latency)
            delivered.update(ids)
    print(f"wake-up over LISTEN/NOTIFY, {TRIES} tries: {summary(latencies)}")
    assert p99(latencies) < 0.250
    assert sum(delivered.values()) == TRIES and max(delivered.values()) == 1
    state = shared_state(a)
    assert state["mode"] == "pg_notify" and state["running"] and "transport" not in state
    assert state["counters"]["notifies_sent"] > 0


@pytest.mark.timeout(60)
async def test_with_sync_off_a_pop_on_another_instance_waits_for_its_recheck(
    a: ServerProcess, quiet: ServerProcess
) -> None:
    latencies = []
    async with Api(a.url) as producer, Api(quiet.url) as consumer:
        for _ in range(SYNC_OFF_TRIES):
            latency, _, _ = await one_wake(producer, consumer)
            latencies.append(latency)
    print(f"wake-up with sync off, {SYNC_OFF_TRIES} tries: {summary(latencies)}")
    assert min(latencies) > 0.2
    assert shared_state(quiet)["enabled"] is False


@pytest.mark.timeout(120)
async def test_an_instance_alone_notifies_no_one_until_another_listens(
    pg_cluster: PgCluster,
) -> None:
    """LISTEN/NOTIFY is per database: on a database of its own an instance hears nobody, and its
    pushes, in either worker, send no wake-up NOTIFY once its start's presumption that others
    listen has ended (a keepalive may fall in the window; one NOTIFY per queue would be 5).
    A second instance says hello, the first answers, and from then on wake-ups cross."""
    database = create_database(pg_cluster, "queen_alone")
    with running_server(pg_cluster, database, NUM_WORKERS="2", **SLOW_RECHECK) as alone:
        wait_until(lambda: shared_state(alone)["running"], 10, "the first listening")
        # Until its hello is answered, a starting instance presumes others listen (20 s).
        wait_until(lambda: not shared_state(alone)["relaying"], PRESUMED_S + 10, "no one heard")
        before = shared_state(alone)["counters"]["notifies_sent"]
        for queue in [unique("alone") for _ in range(5)]:
            for _ in range(2):  # new connections, so both workers push (the kernel spreads them)
                async with Api(alone.url) as api:
                    await api.push(queue, [{"n": 1}])
            await trio.sleep(WAKE_WINDOW_S * 2)  # each queue's first wake-up goes at once
        await trio.sleep(STATS_INTERVAL_S * 2)
        state = shared_state(alone)
        assert state["instances_heard"] == 0 and not state["relaying"]
        assert state["counters"]["notifies_sent"] - before <= 2  # keepalives

        with running_server(pg_cluster, database, **SLOW_RECHECK) as other:
            wait_until(
                lambda: (
                    shared_state(alone)["instances_heard"] == 1
                    and shared_state(other)["instances_heard"] == 1
                ),
                10,
                "each instance hearing the other",
            )
            async with Api(alone.url) as producer, Api(other.url) as consumer:
                latency, _, ids = await one_wake(producer, consumer)
            assert len(ids) == 1
            assert latency < 1.0  # the consumer re-checks every 5 s
