"""Each child of a worker's supervision tree is crashed on purpose while pops are parked and pushes
flow, against a real PostgreSQL: the child is restarted, the parked pops are still served, and
every push that was acknowledged is delivered exactly once.

The tree runs in-process (queen/actors/root.py, no HTTP), so the crash hits exactly the child
named; `Supervisor.kill` raises in it as any fault would.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio_asyncio

from queen.actors.ingest import Destination
from queen.actors.mailbox import ActorGone
from queen.actors.root import Services
from queen.config import Config
from queen.db.items import AckItem
from queen.http import push_body, validate
from queen.storage.pgcluster import PgCluster, free_port
from tests.faults.harness import eventually
from tests.integration.api import unique
from tests.support import ServerProcess

pytestmark = pytest.mark.faults

PARKED = 3


@pytest.fixture(scope="module")
def migrated(pg_cluster: PgCluster, database: str, server: ServerProcess) -> tuple[PgCluster, str]:
    """The module's database, migrated by the server fixture's start."""
    return pg_cluster, database


def worker_config(cluster: PgCluster, database: str, buffer_dir: Path) -> Config:
    parts = cluster.dsn_parts()
    config = Config.from_env({"NUM_WORKERS": "2"}).with_database(
        str(parts["host"]), int(parts["port"]), str(parts["user"]), str(parts["password"]), database
    )
    return dataclasses.replace(config, port=free_port(), file_buffer_dir=str(buffer_dir))


def child_names() -> list[str]:
    return [child.name for child in Services(Config.from_env({"PG_HOST": "unused"}), 0).children()]


async def push(
    services: Services, queue: str, numbers: range, *, partition_each: bool = False
) -> set[int]:
    """Push one message per number (each into a partition of its own, if asked), retrying what a
    restarting child refuses (as a client would, same transactionIds); answers the numbers that
    were acknowledged."""
    items = [{"queue": queue, "payload": {"n": n}, "transactionId": f"t{n}"} for n in numbers]
    if partition_each:
        for item in items:
            item["partition"] = item["transactionId"]
    body = {"items": items}
    with trio.fail_after(30):
        while True:
            try:
                outcome = await services.ingest.push(push_body.push_items(orjson.dumps(body)))
            except ActorGone:
                await trio.sleep(0.05)
                continue
            assert outcome.destination is not Destination.NOWHERE
            assert {r["status"] for r in outcome.results or []} <= {"queued", "duplicate"}
            return set(numbers)


def pop_attempt(config: Config, queue: str, batch: int) -> Any:
    params = validate.pop_params({"batch": str(batch)}, config)
    return lambda: params.request(validate.PopTarget(queue=queue))


async def drain(services: Services, config: Config, queue: str) -> list[int]:
    """Pop and ack until nothing has come for a second; the numbers delivered, in order."""
    delivered: list[int] = []
    attempt = pop_attempt(config, queue, 100)
    while True:
        deadline = trio.current_time() + 1.0
        result = await services.consumer_groups.park(
            (("queue", queue, ""), "__QUEUE_MODE__"), attempt, deadline, -1
        )
        if result is None:
            return delivered
        delivered.extend(message["data"]["n"] for message in result["messages"])
        acks = [
            AckItem(
                transaction_id=m["transactionId"],
                partition_id=result["partitionId"],
                consumer_group="__QUEUE_MODE__",
                lease_id=result["leaseId"],
                status="completed",
                error=None,
            )
            for m in result["messages"]
        ]
        await services.batcher.ack.submit(acks)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("child", child_names())
async def test_a_crashed_child_restarts_and_loses_nothing(
    child: str, migrated: tuple[PgCluster, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="queen.supervisor")
    config = worker_config(*migrated, tmp_path)
    parked_queue, drained_queue = unique("parked"), unique("drained")
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        services = Services(config, worker_id=0)
        await nursery.start(services.run)
        answers: list[dict[str, Any] | None] = []

        async def parked_pop() -> None:
            deadline = trio.current_time() + 30
            answers.append(
                await services.consumer_groups.park(
                    (("queue", parked_queue, ""), "__QUEUE_MODE__"),
                    pop_attempt(config, parked_queue, 1),
                    deadline,
                    services.consumer_groups.wakes,
                )
            )

        for _ in range(PARKED):
            nursery.start_soon(parked_pop)
        acknowledged = await push(services, drained_queue, range(50))
        await eventually(lambda: services.consumer_groups.parked == PARKED, 10, "pops parked")

        services.supervisor.kill(child)
        await eventually(
            lambda: any(getattr(r, "actor", "") == child for r in caplog.records),
            10,
            f"{child} crashed and logged",
        )
        acknowledged |= await push(services, drained_queue, range(50, 100))
        await push(services, parked_queue, range(PARKED), partition_each=True)

        await eventually(lambda: len(answers) == PARKED, 30, "parked pops answered")
        assert all(a is not None and len(a["messages"]) == 1 for a in answers), answers
        delivered = await drain(services, config, drained_queue)
        nursery.cancel_scope.cancel()
    assert sorted(delivered) == sorted(acknowledged), "every acknowledged push, exactly once"
    assert delivered == sorted(delivered), "in order"
