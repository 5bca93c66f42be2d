"""The status and analytics reports (sql/functions/14_status.sql): each one procedure call on the
admin pool, taking filters the HTTP layer already validated and answering the route's JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from queen.db.errors import RecordNotFound
from queen.db.runner import Pools, procedure_value

Filters = Mapping[str, Any]


async def _report(db: Pools, function: str, filters: Filters) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(
        db.admin, f"SELECT queen.{function}($1::jsonb)", filters
    )
    return result


async def status(db: Pools, filters: Filters) -> dict[str, Any]:
    """Traffic over {from, to}, message totals, leases, dead letters and workers."""
    return await _report(db, "status", filters)


async def status_queues(db: Pools, filters: Filters) -> dict[str, Any]:
    return await _report(db, "status_queues", filters)


async def status_queue(db: Pools, queue: str) -> dict[str, Any]:
    result: dict[str, Any] | None = await procedure_value(
        db.admin, "SELECT queen.status_queue($1)", queue
    )
    if result is None:
        raise RecordNotFound("Queue not found")
    return result


async def status_queue_messages(
    db: Pools, queue: str, limit: int, offset: int
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await procedure_value(
        db.admin, "SELECT queen.status_queue_messages($1, $2, $3)", queue, limit, offset
    )
    return result


async def message_analytics(db: Pools, filters: Filters) -> dict[str, Any]:
    """Stored messages counted per interval step."""
    return await _report(db, "status_analytics", filters)


async def worker_metrics(db: Pools, filters: Filters) -> dict[str, Any]:
    return await _report(db, "worker_metrics_report", filters)


async def system_metrics(db: Pools, filters: Filters) -> dict[str, Any]:
    return await _report(db, "system_metrics_report", filters)


async def postgres_stats(db: Pools) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(db.admin, "SELECT queen.postgres_stats()")
    return result


async def queue_lag(db: Pools, filters: Filters) -> list[dict[str, Any]]:
    """Per queue and minute: pops and their lag, newest first."""
    result: list[dict[str, Any]] = await procedure_value(
        db.admin, "SELECT queen.queue_lag_report($1::jsonb)", filters
    )
    return result


async def queue_ops(db: Pools, filters: Filters) -> dict[str, Any]:
    return await _report(db, "queue_ops_report", filters)


async def queue_parked_replicas(db: Pools, filters: Filters) -> dict[str, Any]:
    return await _report(db, "queue_parked_replicas_report", filters)


async def retention(db: Pools, filters: Filters) -> dict[str, Any]:
    return await _report(db, "retention_report", filters)
