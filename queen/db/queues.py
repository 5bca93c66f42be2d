"""Queues: configure, list, inspect, delete, clear (sql/functions/03_queues.sql,
12_resources.sql, 10_messages.sql), and the namespace/task of queues (sql/queries/queues.sql)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from queen.db import queries
from queen.db.errors import RecordNotFound
from queen.db.runner import Pools, Runner, procedure_value

_SCOPES = queries.named("queues", "scopes")
_ENCRYPTED_AMONG = queries.named("queues", "encrypted_among")
_ENCRYPTED_COUNT = queries.named("queues", "encrypted_count")


async def configure_queue(db: Pools, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Create the queue or change its options; `spec` is validated (queen/http/validate.py)."""
    result: dict[str, Any] = await procedure_value(
        db.hot, "SELECT queen.configure_queue($1::jsonb)", spec
    )
    return result


async def list_queues(db: Pools, filters: Mapping[str, Any]) -> dict[str, Any]:
    """`{"queues": [...]}` matching the namespace/task/search filters, paged by limit/offset."""
    result: dict[str, Any] = await procedure_value(
        db.admin, "SELECT queen.list_queues($1::jsonb)", filters
    )
    return result


async def queue_detail(db: Pools, queue: str) -> dict[str, Any]:
    result: dict[str, Any] | None = await procedure_value(
        db.admin, "SELECT queen.queue_detail($1)", queue
    )
    if result is None:
        raise RecordNotFound("Queue not found")
    return result


async def delete_queue(db: Pools, queue: str) -> dict[str, Any]:
    """Deleting an unknown queue is not an error: the answer says whether one was deleted."""
    result: dict[str, Any] = await procedure_value(db.hot, "SELECT queen.delete_queue($1)", queue)
    return result


async def clear_queue(db: Pools, queue: str, partition: str | None) -> dict[str, Any]:
    """Delete the messages of the queue, or of one partition of it; RecordNotFound when the
    queue or the partition does not exist."""
    result: dict[str, Any] = await procedure_value(
        db.hot, "SELECT queen.clear_queue($1, $2)", queue, partition
    )
    return result


async def queue_scopes(db: Runner, names: list[str]) -> dict[str, tuple[str, str]]:
    """(namespace, task) of each of `names` that exists; '' where the queue has none."""
    rows = await db.call(_SCOPES, names)
    return {row["name"]: (row["namespace"], row["task"]) for row in rows}


async def encrypted_among(db: Runner, names: list[str]) -> set[str]:
    """Those of `names` whose queue has encryptionEnabled (unknown queues have not)."""
    rows = await db.call(_ENCRYPTED_AMONG, names)
    return {row["name"] for row in rows}


async def encrypted_count(db: Runner) -> int:
    count: int = await db.call(_ENCRYPTED_COUNT, kind="fetchval")
    return count
