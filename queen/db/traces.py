"""Trace events consumers record on messages, and their read-back per message, per trace name,
and as a list of names (sql/functions/11_traces.sql)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from queen.db.errors import RecordNotFound
from queen.db.runner import Pools, procedure_value


async def record_trace(db: Pools, event: Mapping[str, Any]) -> dict[str, Any]:
    """On the hot pool: consumers record traces while they process messages."""
    result: dict[str, Any] = await procedure_value(
        db.hot, "SELECT queen.record_trace($1::jsonb)", event
    )
    return result


async def trace_names(db: Pools, query: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(
        db.admin, "SELECT queen.trace_names($1::jsonb)", query
    )
    return result


async def traces_by_name(db: Pools, query: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await procedure_value(
        db.admin, "SELECT queen.traces_by_name($1::jsonb)", query
    )
    return result


async def traces_of_message(db: Pools, partition_id: str, transaction_id: str) -> dict[str, Any]:
    result: dict[str, Any] | None = await procedure_value(
        db.admin, "SELECT queen.traces_of_message($1::uuid, $2)", partition_id, transaction_id
    )
    if result is None:
        raise RecordNotFound("Message not found")
    return result
