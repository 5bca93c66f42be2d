"""The first round of a new hot connection, run before it serves any request.

On a fresh PostgreSQL session the first call of a PL/pgSQL function compiles it and plans each of
its statements, and asyncpg prepares the statement text: measured here, a connection's first
one-message push took 11-13 ms against 1.1 ms for the next, its first pop 4 ms against 1.2 ms,
and 40-180 ms each when a worker's slots all met their first requests at once under load. Paid
inside a request, that is the push→pop latency tail. So each hot connection pushes one message to
a queue of its own, pops it, renews the lease and acks it, with the lanes' exact procedures and
statement texts, inside a transaction that is rolled back: the session's compiled functions,
plans and asyncpg's prepared statements survive the rollback, the rows do not.
"""

from __future__ import annotations

import asyncpg
import msgspec

from queen.actors.consumer_groups import QUEUE_MODE
from queen.db.batches import ACK, POP, PUSH, RENEW
from queen.db.connect import ConnectionRunner
from queen.db.items import AckItem, PopRequest, PushItem, RenewItem
from queen.ids import uuid7_str


class WarmUpFailed(Exception):
    """The round did not go through as a real one would; the connection still works, cold."""


async def warm_up(conn: asyncpg.Connection) -> None:
    """Runs on the asyncio side, like every asyncpg call."""
    db = ConnectionRunner(conn)
    queue = f"__queen_warm_up_{uuid7_str()}"
    message_id = uuid7_str()
    transaction = conn.transaction()
    await transaction.start()
    try:
        push = PushItem(
            queue=queue,
            partition="Default",
            transaction_id=message_id,
            message_id=message_id,
            payload=msgspec.Raw(b'{"warmUp": true}'),
        )
        [pushed] = await PUSH.call(db, [push])
        pop = PopRequest(
            group=QUEUE_MODE,
            batch=1,
            partitions=1,
            auto_ack=False,
            subscription_mode="",
            subscription_from="",
            lease_id=uuid7_str(),
            queue=queue,
        )
        [popped] = await POP.call(db, [pop])
        messages = popped.get("messages") or []
        if pushed["status"] != "queued" or len(messages) != 1:
            raise WarmUpFailed(f"pushed {pushed['status']}, popped {len(messages)} messages")
        lease_id = messages[0]["leaseId"]
        [renewed] = await RENEW.call(db, [RenewItem(lease_id, 60)])
        ack = AckItem(
            transaction_id=message_id,
            partition_id=messages[0]["partitionId"],
            consumer_group=QUEUE_MODE,
            lease_id=lease_id,
            status="completed",
            error=None,
        )
        [acked] = await ACK.call(db, [ack])
        if not (renewed.get("success") and acked.get("success")):
            raise WarmUpFailed(f"renewed {renewed}, acked {acked}")
    finally:
        await transaction.rollback()
