"""The clean-up procedures of sql/functions/13_retention.sql. Each takes the cluster-wide advisory
lock 737001 as a session lock and answers what its cycle did as one JSON object (`ran`, the counts,
`timedOut`, `errors`), so the caller runs it on a session of its own (queen/actors/retention.py)."""

from __future__ import annotations

from typing import Any

from queen.db.runner import Runner


async def retention_round(
    db: Runner,
    *,
    batch_size: int,
    partition_cleanup_days: int,
    step_budget_ms: int,
    min_interval_ms: int,
    metrics_retention_days: int,
    group_cleanup_days: int,
) -> dict[str, Any]:
    """Delete messages past their queue's retention, completed ones past its completed
    retention, long-empty partitions, consumer groups idle for `group_cleanup_days` (0: never),
    and consumption log and retention history rows older than `metrics_retention_days`; skipped
    when another cycle started less than `min_interval_ms` ago."""
    result: dict[str, Any] = await db.call(
        "CALL queen.retention_round($1, $2, $3, $4, $5, $6, NULL)",
        batch_size,
        partition_cleanup_days,
        step_budget_ms,
        min_interval_ms,
        metrics_retention_days,
        group_cleanup_days,
        kind="fetchval",
    )
    return result


async def eviction_round(
    db: Runner, *, batch_size: int, budget_ms: int, min_interval_ms: int
) -> dict[str, Any]:
    """Delete (not dead-letter) messages older than their queue's max wait time that some group
    has not consumed yet."""
    result: dict[str, Any] = await db.call(
        "CALL queen.eviction_round($1, $2, $3, NULL)",
        batch_size,
        budget_ms,
        min_interval_ms,
        kind="fetchval",
    )
    return result
