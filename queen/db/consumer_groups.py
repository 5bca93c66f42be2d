"""Consumer groups and their leases: lag reports, deletes, seeks, subscription changes, and
giving back a lease nobody received (sql/functions/08_consumer_groups.sql, 07_leases.sql)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from queen.db.runner import Pools, procedure_value


async def list_consumer_groups(db: Pools) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await procedure_value(
        db.admin, "SELECT queen.list_consumer_groups()"
    )
    return result


async def lagging_partitions(db: Pools, min_lag_seconds: int) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await procedure_value(
        db.admin, "SELECT queen.lagging_partitions($1)", min_lag_seconds
    )
    return result


async def consumer_group_detail(db: Pools, group: str) -> dict[str, Any]:
    """`{queue: {"partitions": [...]}}`; `{}` for a group with no position anywhere."""
    result: dict[str, Any] = await procedure_value(
        db.admin, "SELECT queen.consumer_group_detail($1)", group
    )
    return result


async def delete_consumer_group(
    db: Pools, group: str, queue: str | None, *, delete_metadata: bool
) -> dict[str, Any]:
    """The group's positions on `queue`, or on every queue when `queue` is None."""
    result: dict[str, Any] = await procedure_value(
        db.admin, "SELECT queen.delete_consumer_group($1, $2, $3)", group, queue, delete_metadata
    )
    return result


async def update_consumer_group_subscription(
    db: Pools, group: str, subscription_timestamp: datetime
) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(
        db.admin,
        "SELECT queen.update_consumer_group_subscription($1, $2)",
        group,
        subscription_timestamp,
    )
    return result


async def seek_consumer_group(
    db: Pools, group: str, queue: str, *, to_end: bool, timestamp: datetime | None
) -> dict[str, Any]:
    """`{"success": false, "error": ...}` when the group has no position on the queue."""
    result: dict[str, Any] = await procedure_value(
        db.admin,
        "SELECT queen.seek_consumer_group($1, $2, $3, $4)",
        group,
        queue,
        to_end,
        timestamp,
    )
    return result


async def seek_partition(db: Pools, group: str, queue: str, partition: str) -> dict[str, Any]:
    """`{"success": false, "error": ...}` when the group has no position on the partition."""
    result: dict[str, Any] = await procedure_value(
        db.admin, "SELECT queen.seek_partition($1, $2, $3)", group, queue, partition
    )
    return result


async def release_lease(db: Pools, lease_id: str) -> None:
    """Give the partitions a lease holds back at once, as if it had expired."""
    await procedure_value(db.hot, "SELECT queen.release_lease($1)", lease_id)


async def release_previous_leases(db: Pools, slot: str, owner: str) -> list[str]:
    """Give back the leases that earlier incarnations of this worker slot took (`owner` is the
    running one's); answers the queues whose partitions became free."""
    queues: list[str] = await procedure_value(
        db.admin, "SELECT queen.release_previous_leases($1, $2)", slot, owner
    )
    return queues
