"""System-wide summaries, computed from the live tables on every call rather than from a stats
cache (sql/functions/12_resources.sql; counts in sql/queries/statistics.sql)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from queen.db import queries
from queen.db.runner import Pools, procedure_value

_RESOURCE_COUNTS = queries.named("statistics", "resource_counts")


async def resources_overview(db: Pools) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(db.admin, "SELECT queen.resources_overview()")
    return result


async def list_partitions(db: Pools, filters: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(
        db.admin, "SELECT queen.list_partitions($1::jsonb)", filters
    )
    return result


async def resources_by_label(
    db: Pools, label: Literal["namespace", "task"]
) -> list[dict[str, Any]]:
    """Queues, partitions and message counts per namespace or per task."""
    result: list[dict[str, Any]] = await procedure_value(
        db.admin, "SELECT queen.resources_by_label($1)", label
    )
    return result


async def resource_counts(db: Pools) -> tuple[int, int]:
    """How many queues and partitions exist."""
    row = await db.admin.call(_RESOURCE_COUNTS, kind="fetchrow")
    return int(row["queues"]), int(row["partitions"])
