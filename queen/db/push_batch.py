"""How a fused batch of push items travels to `queen.push_batch` (sql/functions/04_push.sql) and
back.

The batch's distinct (queue, partition) targets are listed once; each item's target and position
within it are computed here, where they cost a dict lookup rather than a sort in the database.
Per-item integers and payloads go as one text each: asyncpg checks every element of an array
parameter against three abstract base classes before encoding it, which for a 1000-message push
cost more CPU per array than all of this module.

An item repeating an earlier item's (queue, partition, transactionId) in the same batch is not
sent at all: it is a duplicate of that earlier item, whatever that one's fate (the first wins).
Items carry their payload as serialised JSON (queen/db/items.py), decoded to text once for the
whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from queen.db.items import PushItem

SQL = "SELECT * FROM queen.push_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"

# Separates payloads in one text; valid JSON text never contains it outside an escape.
PAYLOAD_SEPARATOR = b"\x1e"


@dataclass(frozen=True)
class Plan:
    """What `decode` needs to map the procedure's answer back to every item of the batch."""

    target_of: list[int]  # per item: 0-based index into the targets
    sent_as: list[int]  # per item: 1-based position among the sent items, or -(first item + 1)


def encode(items: Sequence[PushItem]) -> tuple[tuple[Any, ...], Plan]:
    targets: dict[tuple[str, str], int] = {}
    firsts: dict[tuple[int, str], int] = {}
    per_target: list[int] = []
    target_of: list[int] = []
    sent_as: list[int] = []
    sent: list[PushItem] = []
    targets_text: list[str] = []
    offsets_text: list[str] = []
    for position, item in enumerate(items):
        key = (item.queue, item.partition)
        target = targets.get(key)
        if target is None:
            target = targets[key] = len(targets)
            per_target.append(0)
        target_of.append(target)
        first = firsts.setdefault((target, item.transaction_id), position)
        if first != position:
            sent_as.append(-(first + 1))
            continue
        per_target[target] += 1
        sent.append(item)
        sent_as.append(len(sent))
        targets_text.append(str(target + 1))
        offsets_text.append(str(per_target[target]))
    args = (
        [queue for queue, _ in targets],
        [partition for _, partition in targets],
        per_target,
        ",".join(targets_text),
        ",".join(offsets_text),
        [item.transaction_id for item in sent],
        [item.message_id for item in sent],
        _optional([item.trace_id for item in sent]),
        PAYLOAD_SEPARATOR.join([item.payload for item in sent]).decode(),
        _optional([item.producer_sub for item in sent]),
        _optional([item.is_encrypted for item in sent]),
        _optional([item.skip_capacity for item in sent]),
    )
    return args, Plan(target_of, sent_as)


def _optional(values: list[Any]) -> list[Any] | None:
    """A column nobody set goes as NULL: the procedure reads a missing array as all NULL."""
    return values if any(values) else None


def decode(row: Any, items: Sequence[PushItem], plan: Plan) -> list[dict[str, Any]]:
    """Each item's result, in item order and already in the push response's shape; `index`
    counts items within the batch until the push path renumbers it within each request."""
    partition_ids: list[str] = row["partition_ids"]
    stored_before = dict(
        zip(row["duplicate_positions"] or (), row["duplicate_ids"] or (), strict=True)
    )
    results: list[dict[str, Any]] = []
    for index, (item, target, sent_as) in enumerate(
        zip(items, plan.target_of, plan.sent_as, strict=True)
    ):
        if sent_as > 0:
            existing = stored_before.get(sent_as)
        else:
            existing = results[-sent_as - 1]["message_id"]
        result = {
            "index": index,
            "transaction_id": item.transaction_id,
            "status": "queued" if existing is None else "duplicate",
            "message_id": item.message_id if existing is None else existing,
            "queueName": item.queue,
        }
        if existing is None:  # the response names a partition and trace only for stored messages
            result["partition_id"] = partition_ids[target]
            result["trace_id"] = item.trace_id
        results.append(result)
    return results
