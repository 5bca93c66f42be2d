"""Messages one by one, for administration: list, inspect, delete, retry, dead-letter, and the
dead-letter listing (sql/functions/09_dead_letters.sql, 10_messages.sql).

A message's state is derived in SQL from cursors, leases and DLQ rows. Refusals the procedures
must make atomically (an unknown message, a move the cursor cannot express) arrive as
RecordNotFound / StateConflict, after the call has changed nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from queen.db.errors import RecordNotFound
from queen.db.runner import Pools, procedure_value


async def list_messages(db: Pools, filters: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(
        db.admin, "SELECT queen.list_messages($1::jsonb)", filters
    )
    return result


async def message_detail(db: Pools, partition_id: str, transaction_id: str) -> dict[str, Any]:
    result: dict[str, Any] | None = await procedure_value(
        db.admin, "SELECT queen.message_detail($1::uuid, $2)", partition_id, transaction_id
    )
    if result is None:
        raise RecordNotFound("Message not found")
    return result


async def delete_message(db: Pools, partition_id: str, transaction_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(
        db.hot, "SELECT queen.delete_message($1::uuid, $2)", partition_id, transaction_id
    )
    return result


async def retry_message(
    db: Pools, partition_id: str, transaction_id: str, group: str | None
) -> dict[str, Any]:
    """Without a group, the retry applies to every group that dead-lettered the message, or to
    queue mode when none did; each group's outcome is in `groups`."""
    result: dict[str, Any] = await procedure_value(
        db.hot,
        "SELECT queen.retry_message($1::uuid, $2, $3)",
        partition_id,
        transaction_id,
        group,
    )
    return result


async def dead_letter_message(
    db: Pools, partition_id: str, transaction_id: str, group: str, error: str | None
) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(
        db.hot,
        "SELECT queen.dead_letter_message($1::uuid, $2, $3, $4)",
        partition_id,
        transaction_id,
        group,
        error,
    )
    return result


async def list_dead_letters(db: Pools, filters: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(
        db.admin, "SELECT queen.list_dead_letters($1::jsonb)", filters
    )
    return result
