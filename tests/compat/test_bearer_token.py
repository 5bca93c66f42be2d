"""The official clients against a JWT-enabled server (issue 14): with a bearer token they push,
pop, ack and commit transactions, and every stored message's producerSub is the token's `sub`,
including pushes taken by the disk buffer while PostgreSQL is down; without one they are
refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from queen.storage.pgcluster import PgCluster
from tests.compat.harness import CLIENT_015, ClientRunner, script, unique_queue
from tests.support import ServerProcess, create_database, run_sql, running_server, wait_until

pytestmark = [pytest.mark.compat, pytest.mark.timeout(180)]

SECRET = "compat-secret-" + "0123456789abcdef" * 3
JWT_ENV = {"JWT_ENABLED": "true", "JWT_ALGORITHM": "HS256", "JWT_SECRET": SECRET}


def token(sub: str, role: str = "read-write") -> str:
    return jwt.encode({"sub": sub, "role": role}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def database(pg_cluster: PgCluster) -> str:
    return create_database(pg_cluster)


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, **JWT_ENV) as process:
        yield process


def producer_subs(cluster: PgCluster, database: str, *queues: str) -> list[Any]:
    rows = run_sql(
        cluster,
        "SELECT m.producer_sub FROM queen.messages m"
        " JOIN queen.partitions p ON p.id = m.partition_id"
        " JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = ANY($1::text[])",
        list(queues),
        database=database,
    )
    return [row["producer_sub"] for row in rows]


def test_a_client_with_a_bearer_token_pushes_pops_acks_and_commits(
    client: ClientRunner, pg_cluster: PgCluster, database: str
) -> None:
    queue, target = unique_queue("bearer"), unique_queue("bearer-target")
    result = client.run(
        script("bearer_story"),
        {"queue": queue, "target": target},
        env={"QUEEN_BEARER_TOKEN": token(f"svc-{client.label}")},
    )
    assert [m["data"] for m in result["popped"]] == [{"n": 1}, {"n": 2}]
    assert [m["data"] for m in result["moved"]] == [{"n": 3}]
    assert producer_subs(pg_cluster, database, queue, target) == [f"svc-{client.label}"] * 3
    refused = client.run(script("bearer_story"), {"queue": queue, "target": target})
    assert "Authentication required" in refused["refused"]["message"]


def test_pushes_buffered_during_an_outage_keep_the_token_subject(
    own_cluster: PgCluster,
) -> None:
    database = create_database(own_cluster)
    queue = unique_queue("outage-sub")
    with running_server(own_cluster, database, **JWT_ENV) as server:
        runner = ClientRunner(CLIENT_015, server)
        own_cluster.stop()
        try:
            pushed = runner.run(
                "from compat_runtime import run, to_json\n"
                "async def main(client, args):\n"
                "    return to_json(await client.queue(args['queue']).push(\n"
                "        [{'data': {'n': 1}, 'producerSub': 'mallory'}]))\n"
                "run(main)\n",
                {"queue": queue},
                env={"QUEEN_BEARER_TOKEN": token("outage-svc")},
            )
        finally:
            own_cluster.start()
        assert pushed, pushed

        def replayed() -> bool:
            return producer_subs(own_cluster, database, queue) != []

        wait_until(replayed, 60.0, "the buffered push to replay")
        assert producer_subs(own_cluster, database, queue) == ["outage-svc"]
