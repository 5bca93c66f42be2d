"""A `/transaction` sent again after its answer was lost: with transactionIds on its pushes, the
retry is a no-op that answers success, as a repeated `/push` is (docs/transactions.md)."""

from __future__ import annotations

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, run_sql


async def test_a_retried_transaction_with_transaction_ids_changes_nothing(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    source, target = unique("tx-src"), unique("tx-dst")
    async with Api(server.url) as api:
        await api.push(source, [{"n": 1}, {"n": 2}], transactionId=None)
        popped = await api.pop(source, batch=2)
        assert popped is not None
        done, failed = popped["messages"]
        body = {
            "operations": [
                {
                    "type": "push",
                    "items": [{"queue": target, "payload": {"v": 1}, "transactionId": "out-1"}],
                },
                {
                    "type": "ack",
                    "transactionId": done["transactionId"],
                    "partitionId": done["partitionId"],
                    "status": "completed",
                },
                {
                    "type": "ack",
                    "transactionId": failed["transactionId"],
                    "partitionId": failed["partitionId"],
                    "status": "failed",
                    "error": "boom",
                },
            ]
        }
        answers = [await api.request("POST", "/api/v1/transaction", json=body) for _ in range(2)]

    for status, answer in answers:
        assert status == 200 and answer["success"], answer
    first, retry = (answer["results"] for _, answer in answers)
    assert retry[0]["messageId"] == first[0]["messageId"], "the retry names the stored message"
    stored = run_sql(
        pg_cluster,
        "SELECT count(*) AS n FROM queen.messages m"
        " JOIN queen.partitions p ON p.id = m.partition_id"
        " JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1",
        target,
        database=database,
    )
    assert stored[0]["n"] == 1
    dead = run_sql(
        pg_cluster,
        "SELECT count(*) AS n FROM queen.dead_letter_queue d JOIN queen.messages m"
        " ON m.id = d.message_id WHERE m.transaction_id = $1",
        failed["transactionId"],
        database=database,
    )
    assert dead[0]["n"] == 1, "the retried dead-lettering is not recorded twice"
