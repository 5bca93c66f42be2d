"""One producer pushes to one partition over one connection while PostgreSQL stops and comes back:
its messages are delivered in the order it was told they were taken.

During the outage its pushes are answered "buffered"; once the database answers again, the
worker holding them must not let the producer's next pushes reach PostgreSQL before the buffer
has replayed them, or a consumer sees the later messages first (FIFO per partition breaks).
"""

from __future__ import annotations

import itertools
import time

import httpx
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.faults.harness import (
    Ledger,
    assert_exactly_once,
    eventually,
    new_database,
    push_batch,
    report,
    wait_drained,
)
from tests.integration.api import Api, unique
from tests.support import ServerProcess, server_env

pytestmark = pytest.mark.faults

OUTAGE_S = 2.0
PACE_S = 0.01  # between one answer and the next push: the producer's rate
PARTITION = "p0"


async def produce(url: str, queue: str, ledger: Ledger, stop: trio.Event) -> None:
    """Push one message at a time, each after the previous one was answered, on one kept-alive
    connection (one worker), until `stop`."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:
        n = 0
        while not stop.is_set():
            await push_batch(client, queue, [f"fifo-{n}"], ledger, partition=PARTITION)
            n += 1
            await trio.sleep(PACE_S)


async def delivery_order(url: str, queue: str) -> list[str]:
    """Every message of the partition, in the order consumers receive them."""
    delivered: list[str] = []
    async with Api(url) as api:
        while (popped := await api.pop(queue, PARTITION, batch=500, autoAck=True)) is not None:
            delivered += [message["transactionId"] for message in popped["messages"]]
    return delivered


@pytest.mark.timeout(120)
async def test_a_producer_on_one_connection_is_delivered_in_acknowledgment_order(
    own_cluster: PgCluster,
) -> None:
    cluster = own_cluster
    database = await new_database(cluster)
    server = ServerProcess(server_env(cluster, database, NUM_WORKERS="2")).start()
    queue = unique("fifo")
    ledger = Ledger()
    stop = trio.Event()
    restarted = 0.0
    try:
        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, server.url, queue, ledger, stop)
                await eventually(lambda: len(ledger.acknowledged) >= 30, 10, "a healthy load")
                await trio.to_thread.run_sync(cluster.stop)
                await eventually(lambda: ledger.buffered >= 20, 10, "pushes to fail over")
                await trio.sleep(OUTAGE_S)  # the outage itself: a deliberate duration
                await trio.to_thread.run_sync(cluster.start)
                restarted = time.monotonic()

                def stored_directly(count: int) -> bool:
                    after = [s for at, _, s in ledger.answers if at > restarted]
                    return sum(statuses == ["queued"] for statuses in after) >= count

                await eventually(
                    lambda: stored_directly(50), 30, "pushes to go straight to PostgreSQL again"
                )
                stop.set()
            async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
                rows = await wait_drained(
                    client, cluster, database, queue, expected=set(ledger.acknowledged)
                )
            delivered = await delivery_order(server.url, queue)
    finally:
        server.stop()

    acknowledged = list(ledger.acknowledged)  # insertion order: the order the answers came
    position = {txid: index for index, txid in enumerate(delivered)}
    inversions = sum(
        position[b] < position[a]
        for a, b in itertools.pairwise(acknowledged)
        if a in position and b in position
    )
    report("buffer-order", ledger, rows, inversions=inversions, delivered=len(delivered))
    assert_exactly_once(ledger, rows)
    assert not ledger.failed and not ledger.unanswered
    assert ledger.buffered >= 20
    assert delivered == acknowledged, f"{inversions} neighbours delivered out of order"
