"""The metric rows of one worker process and the database half of a Prometheus scrape
(sql/functions/15_metrics.sql)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from queen.db.runner import Runner, procedure_value


async def record_minute(db: Runner, rows: Mapping[str, Any], timeout_s: float) -> None:
    """Rewrite this process's rows of one minute: {worker, queues, system}."""
    await db.call(
        "SELECT queen.record_metrics($1::jsonb)", rows, kind="execute", timeout_s=timeout_s
    )


async def prune(db: Runner, days: int, limit: int) -> int | None:
    """Rows older than `days` deleted (at most `limit` per table); None: another instance
    holds the lock."""
    result: int | None = await procedure_value(
        db, "SELECT queen.prune_metrics($1, $2)", days, limit
    )
    return result


async def prometheus_snapshot(db: Runner, timeout_s: float) -> dict[str, Any]:
    result: dict[str, Any] = await db.call(
        "SELECT queen.prometheus_snapshot()", kind="fetchval", timeout_s=timeout_s
    )
    return result
