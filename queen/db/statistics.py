"""Planner statistics of a young messages table (sql/functions/17_statistics.sql)."""

from __future__ import annotations

from queen.db.runner import Runner, procedure_value


async def refresh_young_statistics(db: Runner) -> bool:
    """Whether `queen.messages` was analysed now (it had changed by more than its size)."""
    analysed: bool = await procedure_value(db, "SELECT queen.refresh_young_statistics()")
    return analysed
