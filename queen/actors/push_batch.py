"""How a fused batch of push items travels to `queen.push_batch` (sql/009_push_batch.sql) and
back: one array per field, the batch's distinct (queue, partition) targets listed once, and each
item's position within its target precomputed here, where it costs a dict lookup rather than a
sort in the database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

SQL = "SELECT * FROM queen.push_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"


def encode(items: Sequence[dict[str, Any]]) -> tuple[Any, ...]:
    targets: dict[tuple[str, str], int] = {}
    per_target: list[int] = []
    target_of: list[int] = []
    offset_of: list[int] = []
    for item in items:
        key = (item["queue"], item["partition"])
        index = targets.get(key)
        if index is None:
            index = targets[key] = len(targets)
            per_target.append(0)
        per_target[index] += 1
        target_of.append(index + 1)
        offset_of.append(per_target[index])
    return (
        [queue for queue, _ in targets],
        [partition for _, partition in targets],
        target_of,
        offset_of,
        [item["transactionId"] for item in items],
        [item["messageId"] for item in items],
        _optional([item.get("traceId") for item in items]),
        [orjson.dumps(item["payload"]).decode() for item in items],
        _optional([item.get("producerSub") for item in items]),
        _optional([item.get("isEncrypted") for item in items]),
        _optional([item.get("skipCapacity") for item in items]),
    )


def _optional(values: list[Any]) -> list[Any] | None:
    """A column nobody set goes as NULL: the procedure reads a missing array as all NULL."""
    return values if any(values) else None


def decode(row: Any, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-item results the push path replies with, in item order."""
    partition_ids: list[str] = row["partition_ids"]
    duplicates = dict(
        zip(row["duplicate_positions"] or (), row["duplicate_ids"] or (), strict=True)
    )
    targets: dict[tuple[str, str], str] = {}
    results = []
    for position, item in enumerate(items, start=1):
        key = (item["queue"], item["partition"])
        partition_id = targets.get(key)
        if partition_id is None:
            partition_id = targets[key] = partition_ids[len(targets)]
        existing = duplicates.get(position)
        results.append(
            {
                "status": "queued" if existing is None else "duplicate",
                "message_id": item["messageId"] if existing is None else existing,
                "partition_id": partition_id,
                "transaction_id": item["transactionId"],
                "trace_id": item.get("traceId"),
                "queueName": item["queue"],
            }
        )
    return results
