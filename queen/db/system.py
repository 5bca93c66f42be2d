"""The health probe and the cluster-wide switches in `queen.system_state`
(statements in sql/queries/health.sql and sql/queries/system_state.sql)."""

from __future__ import annotations

from collections.abc import Sequence

from queen.db import queries
from queen.db.runner import Runner

_PING = queries.named("health", "ping")
_READ_FLAGS = queries.named("system_state", "read_flags")
_WRITE_FLAG = queries.named("system_state", "write_flag")


async def ping(db: Runner, *, timeout_s: float) -> bool:
    """Whether the database answers a trivial statement within `timeout_s`, on a connection of
    its own (the probe pool), so neither a busy message path nor slow listings make the instance
    look down."""
    return bool(await db.call(_PING, kind="fetchval", timeout_s=timeout_s) == 1)


async def read_flags(db: Runner, keys: Sequence[str], *, timeout_s: float) -> dict[str, bool]:
    """The switches among `keys` that were ever set, by key."""
    rows = await db.call(_READ_FLAGS, list(keys), timeout_s=timeout_s)
    return {row["key"]: row["enabled"] for row in rows}


async def write_flag(db: Runner, key: str, enabled: bool, *, timeout_s: float) -> None:
    await db.call(_WRITE_FLAG, key, {"enabled": enabled}, kind="execute", timeout_s=timeout_s)
