"""The PostgreSQL side of instance-to-instance wake-ups: sending on and listening to one channel
(statement in sql/queries/cluster.sql). Runs on the asyncio side, on a connection of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from queen.db import queries
from queen.db.runner import Runner

CHANNEL = "queen_cluster"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7900

_NOTIFY = queries.named("cluster", "notify")


async def notify(db: Runner, payload: str, *, timeout_s: float) -> None:
    await db.call(_NOTIFY, CHANNEL, payload, kind="execute", timeout_s=timeout_s)


async def listen(
    conn: asyncpg.Connection, callback: Callable[..., Any], on_closed: Callable[..., Any]
) -> None:
    """`callback(connection, pid, channel, payload)` for every NOTIFY on the channel, this
    session's own included; `on_closed(connection)` when the connection ends."""
    conn.add_termination_listener(on_closed)
    await conn.add_listener(CHANNEL, callback)
