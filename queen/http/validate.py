"""Request validation for the messaging routes: pure functions from client JSON / query strings to
the normalised items the stored procedures take. Every rejection is a BadRequest whose message
names the field, raised before anything reaches the database, so a bad request changes nothing.
Messages the official clients may show to users keep the original's wording.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from queen.actors.consumer_groups import QUEUE_MODE
from queen.config import Config
from queen.db.items import (
    AckItem,
    PopRequest,
    PushItem,
    Transaction,
    TransactionAck,
    TransactionOp,
    TransactionPush,
)
from queen.errors import BadRequest, PayloadTooLarge
from queen.ids import uuid7_str, uuid7_strs

MAX_NAME = 255
DEFAULT_PARTITION = "Default"
ACK_STATUSES = ("completed", "success", "failed", "dlq", "retry")

INT_OPTIONS = {
    "leaseTime": 300,
    "retryLimit": 3,
    "retryDelay": 1000,
    "priority": 0,
    "maxSize": 0,
    "ttl": 3600,
    "delayedProcessing": 0,
    "windowBuffer": 0,
    "retentionSeconds": 0,
    "completedRetentionSeconds": 0,
    "maxWaitTimeSeconds": 0,
}
BOOL_OPTIONS = {
    "deadLetterQueue": False,
    "dlqAfterMaxRetries": False,
    "retentionEnabled": False,
    "encryptionEnabled": False,
}
MAX_OPTION_VALUE = 2**31 - 1
# Containers nested in one payload. orjson encodes at most 254 levels, and a stored payload is sent
# back wrapped in a few more (pop, transaction, DLQ), so anything deeper than this could be stored
# but never delivered; the margin keeps every envelope encodable.
MAX_PAYLOAD_DEPTH = 200


# PostgreSQL's own uuid syntax: 32 hex digits, a hyphen allowed after any group of four but the
# last, the whole optionally in braces. Python's uuid.UUID also takes `urn:uuid:` prefixes and
# hyphens anywhere, which PostgreSQL refuses and asyncpg's codec refuses more of (braces).
_UUID_TEXT = re.compile(r"(\{)?((?:[0-9a-f]{4}-?){7}[0-9a-f]{4})(?(1)\})", re.ASCII | re.IGNORECASE)


def uuid_text(value: str, refusal: str) -> str:
    """Every id a client sends (partition, lease, trace) passes here once: what PostgreSQL would
    read as a uuid comes back in canonical form (lowercase, hyphenated), so the database, the
    driver and every later comparison see one spelling; anything else is refused with
    `refusal` before a request is built, so it can never fail a batch it was fused into."""
    match = _UUID_TEXT.fullmatch(value)
    if match is None:
        raise BadRequest(refusal)
    digits = match.group(2).replace("-", "").lower()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def text(value: str, what: str) -> str:
    """PostgreSQL text and jsonb cannot hold U+0000; reject it here rather than fail the call."""
    if "\x00" in value:
        raise BadRequest(f"{what} must not contain the NUL character (\\u0000)")
    return value


def name(value: Any, what: str, *, required_message: str | None = None) -> str:
    if not isinstance(value, str):
        raise BadRequest(required_message or f"{what} must be a string")
    if not value or len(value) > MAX_NAME:
        raise BadRequest(f"{what} must be 1 to {MAX_NAME} characters")
    return text(value, what)


def optional_string(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    return text(value, what)


def payload(value: Any, what: str = "payload") -> Any:
    """A message payload (or any JSON stored as jsonb and sent back, such as trace data): any JSON,
    but storable (no NUL in keys or strings) and deliverable (at most MAX_PAYLOAD_DEPTH nested
    containers)."""
    _checked_json(value, what)
    return value


def _checked_json(value: Any, what: str) -> bytes:
    """The serialised form answers both questions for almost every payload without walking it:
    NUL can only appear as the escape `\\u0000`, and a payload shorter than twice
    MAX_PAYLOAD_DEPTH, or with no more brackets than that, cannot nest deeper."""
    try:
        serialised = orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise BadRequest(f"{what} nesting must not exceed {MAX_PAYLOAD_DEPTH} levels") from None
    if b"\\u0000" in serialised or len(serialised) > 2 * MAX_PAYLOAD_DEPTH:
        if isinstance(value, str):
            text(value, what)
        elif isinstance(value, dict | list) and (
            b"\\u0000" in serialised
            or serialised.count(b"[") + serialised.count(b"{") > MAX_PAYLOAD_DEPTH
        ):
            _walk_payload(value, what)
    # orjson's output keeps its buffer's slack (4 KiB at least, some 10x the text for larger
    # payloads) and a push holds its payloads until answered: an exact copy costs 0.25 us.
    return bytes(memoryview(serialised))


def _walk_payload(value: dict[str, Any] | list[Any], what: str) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_PAYLOAD_DEPTH:
            raise BadRequest(f"{what} nesting must not exceed {MAX_PAYLOAD_DEPTH} levels")
        if isinstance(node, dict):
            for key in node:
                text(key, what)
            children = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, str):
                text(child, what)
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1))


def group_name(value: Any) -> str:
    """A consumer group; null, absent or empty mean queue mode."""
    group = optional_string(value, "consumerGroup")
    if not group:
        return QUEUE_MODE
    if len(group) > MAX_NAME:
        raise BadRequest(f"consumerGroup must be at most {MAX_NAME} characters")
    return group


def push_item(item: Any, message_id: str, producer_sub: str | None = None) -> PushItem:
    """One push item, normalised (`push_fields`), its payload serialised: the JSON PostgreSQL
    will store. Any producerSub, isEncrypted or messageId the client sent is not read."""
    if not isinstance(item, dict):
        raise BadRequest("Each item must be an object")
    return push_fields(
        item.get("queue"),
        item.get("partition"),
        item.get("transactionId"),
        item.get("traceId"),
        message_id,
        payload=msgspec.Raw(_checked_json(item.get("payload"), "payload")),
        producer_sub=producer_sub,
    )


def push_fields(
    queue: Any,
    partition: Any,
    transaction_id: Any,
    trace_id: Any,
    message_id: str,
    *,
    payload: msgspec.Raw,
    producer_sub: str | None = None,
) -> PushItem:
    """A push item from its fields and its payload's checked JSON: partition defaulted, traceId
    checked, and a missing transactionId the message id, so generated ones are time-ordered too.
    `producer_sub` is the verified token's subject (spec D-J11). Runs once per message of every
    push: the common checks are inline."""
    if partition is None or partition == "":
        partition = DEFAULT_PARTITION
    elif not isinstance(partition, str):
        raise BadRequest("Partition must be a string")
    elif len(partition) > MAX_NAME or "\x00" in partition:
        text(partition, "Partition")
        raise BadRequest(f"Partition must be at most {MAX_NAME} characters")
    if not isinstance(queue, str) or not queue or len(queue) > MAX_NAME or "\x00" in queue:
        queue = name(queue, "Queue name", required_message="Queue must be a string")
    if transaction_id is not None and (
        not isinstance(transaction_id, str)
        or len(transaction_id) > MAX_NAME
        or "\x00" in transaction_id
    ):
        if not isinstance(transaction_id, str):
            raise BadRequest("TransactionId must be a string")
        text(transaction_id, "TransactionId")
        raise BadRequest(f"TransactionId must be at most {MAX_NAME} characters")
    if trace_id is not None:
        if not isinstance(trace_id, str):
            raise BadRequest("TraceId must be a string")
        if trace_id:
            trace_id = uuid_text(trace_id, "TraceId must be a valid UUID")
    return PushItem(
        queue=queue,
        partition=partition,
        transaction_id=transaction_id or message_id,
        message_id=message_id,
        payload=payload,
        trace_id=trace_id or None,
        producer_sub=producer_sub,
    )


def push_items(body: Any, producer_sub: str | None = None) -> list[PushItem]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest("items array is required")
    ids = uuid7_strs(len(items))
    return [
        push_item(item, message_id, producer_sub)
        for item, message_id in zip(items, ids, strict=True)
    ]


def ack_item(item: Any, group: str | None = None) -> AckItem:
    """One acknowledgment; `group` (the batch's top-level group) overrides the item's own."""
    if not isinstance(item, dict):
        raise BadRequest("Each acknowledgment must be an object")
    transaction_id = item.get("transactionId")
    if not isinstance(transaction_id, str) or not transaction_id:
        raise BadRequest("transactionId is required")
    text(transaction_id, "transactionId")
    partition_id = item.get("partitionId")
    if not isinstance(partition_id, str) or not partition_id:
        raise BadRequest("partitionId is required to ensure message uniqueness")
    partition_id = uuid_text(partition_id, "partitionId must be a UUID")
    lease_id = optional_string(item.get("leaseId"), "leaseId")
    if lease_id:
        lease_id = uuid_text(lease_id, "leaseId must be a UUID")
    status = optional_string(item.get("status"), "status") or "completed"
    error = item.get("error")
    if error is not None and not isinstance(error, str):
        error = _checked_json(error, "error").decode()  # its JSON text: str() recurses
    if error is not None:
        text(error, "error")
    return AckItem(
        transaction_id=transaction_id,
        partition_id=partition_id,
        consumer_group=group if group is not None else group_name(item.get("consumerGroup")),
        lease_id=lease_id or None,
        status=status,
        error=error or None,
    )


def within_limit(count: int, limit: int, what: str) -> None:
    """One request's work stays bounded (QUEEN_MAX_REQUEST_ITEMS): refused before any of it."""
    if count > limit:
        raise PayloadTooLarge(f"at most {limit} {what} per request, got {count}")


def ack_batch(body: Any, max_items: int) -> list[AckItem]:
    acknowledgments = body.get("acknowledgments") if isinstance(body, dict) else None
    if not isinstance(acknowledgments, list):
        raise BadRequest("acknowledgments array is required")
    within_limit(len(acknowledgments), max_items, "acknowledgments")
    group = group_name(body.get("consumerGroup"))
    items = []
    for ack in acknowledgments:
        if not isinstance(ack, dict) or not isinstance(ack.get("transactionId"), str):
            raise BadRequest("Each acknowledgment must have a valid transactionId string")
        if not isinstance(ack.get("partitionId"), str):
            raise BadRequest(
                "Each acknowledgment must have a valid partitionId string"
                " to ensure message uniqueness"
            )
        items.append(ack_item(ack, group))
    return items


def transaction_ops(body: Any, max_items: int, producer_sub: str | None = None) -> Transaction:
    """The operations of a transaction; its pushes carry `producer_sub` like any push."""
    operations = body.get("operations") if isinstance(body, dict) else None
    if not isinstance(operations, list):
        raise BadRequest("operations array required")
    if not operations:
        raise BadRequest("operations array cannot be empty")
    within_limit(
        sum(
            len(op["items"]) if isinstance(op, dict) and isinstance(op.get("items"), list) else 1
            for op in operations
        ),
        max_items,
        "operations",
    )
    ops: list[TransactionOp] = []
    for operation in operations:
        if not isinstance(operation, dict):
            raise BadRequest("Each operation must be an object")
        kind = operation.get("type")
        if kind == "push":
            raw_items = operation.get("items")
            if not isinstance(raw_items, list) or not raw_items:
                raise BadRequest("push operation needs a non-empty items array")
            for raw in raw_items:
                item = push_item(raw, uuid7_str(), producer_sub)
                if "payload" not in raw:  # a transaction's push without a payload stores {}
                    item = msgspec.structs.replace(item, payload=msgspec.Raw(b"{}"))
                ops.append(TransactionPush(item))
        elif kind == "ack":
            ops.append(TransactionAck(**msgspec.structs.asdict(ack_item(operation))))
        elif isinstance(kind, str):
            raise BadRequest(f"Unknown operation type: {kind}")
        else:
            raise BadRequest("Unknown operation type: type must be a string")
    return ops


def configure(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("queue"), str):
        raise BadRequest("queue is required")
    queue = name(body["queue"], "queue")
    namespace = optional_string(body.get("namespace"), "namespace") or ""
    task = optional_string(body.get("task"), "task") or ""
    for label, scope in (("namespace", namespace), ("task", task)):
        if len(scope) > MAX_NAME:
            raise BadRequest(f"{label} must be at most {MAX_NAME} characters")
    raw_options = body.get("options")
    if raw_options is None:
        raw_options = {}
    if not isinstance(raw_options, dict):
        raise BadRequest("options must be an object")
    options: dict[str, Any] = {}
    for key, default in INT_OPTIONS.items():
        value = raw_options.get(key)
        if value is None:
            value = default
        valid = isinstance(value, int) and not isinstance(value, bool)
        if not valid or not 0 <= value <= MAX_OPTION_VALUE:
            raise BadRequest(f"options.{key} must be a non-negative integer")
        options[key] = value
    for key, default in BOOL_OPTIONS.items():
        value = raw_options.get(key)
        if value is None:
            value = default
        if not isinstance(value, bool):
            raise BadRequest(f"options.{key} must be true or false")
        options[key] = value
    return {"queue": queue, "namespace": namespace, "task": task, "options": options}


def query_bool(args: Mapping[str, str], key: str, default: bool = False) -> bool:
    value = args.get(key)
    if value is None:
        return default
    return value in ("true", "1")


# C's strtol saturates here; a longer run of digits is never turned into a Python int at all
# (int() refuses more than 4300 digits, and would spend time on fewer).
_INT_LIMIT = 2**63 - 1
_LEADING_INTEGER = re.compile(r"\s*([+-]?)0*([0-9]+)", re.ASCII)


def query_int(args: Mapping[str, str], key: str, default: int, *, whole: bool = False) -> int:
    """The one reading of an integer query parameter: absent or empty gives the default; otherwise
    a leading integer of ASCII digits, as the original's atoi reads it (`str.isdigit` would take
    `²` and `①`, which int() then refuses), saturating at ±(2**63 - 1) so that range checks, not
    conversion, judge a huge value. Text that is no integer gives the default, or with `whole`
    (and then also text after the digits) a 400."""
    raw = args.get(key)
    if raw is None or raw == "":
        return default
    match = _LEADING_INTEGER.match(raw)
    if match is None or (whole and match.end() != len(raw)):
        if whole:
            raise BadRequest(f"{key} must be an integer")
        return default
    sign, digits = match.groups()
    value = int(digits) if len(digits) <= 19 else _INT_LIMIT
    return max(-_INT_LIMIT, min(_INT_LIMIT, -value if sign == "-" else value))


def instant(raw: str) -> datetime | None:
    """The one reading of a client timestamp (ISO-8601; UTC when it has no zone) as an aware UTC
    datetime, or None when it is none. Converting to UTC here means PostgreSQL only ever sees an
    offset of +00:00: Python also accepts offsets with seconds and fractions (`+01:00:30.5`),
    which PostgreSQL would refuse, and its own words (`tomorrow`) never take part."""
    try:
        parsed = datetime.fromisoformat(raw.strip())
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: outside years 1-9999 once in UTC
        return None


def subscription_start(raw: str) -> str:
    """`now`, an ISO-8601 timestamp rendered for PostgreSQL, or "" — an unparsable value is
    ignored (spec §3.4), so the subscription mode decides instead."""
    if raw in ("", "now"):
        return raw
    parsed = instant(raw)
    return "" if parsed is None else parsed.isoformat()


@dataclass(frozen=True)
class PopTarget:
    """Where a pop looks: a queue (and maybe one of its partitions), or a namespace and/or task."""

    queue: str | None = None
    partition: str | None = None
    namespace: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class PopParams:
    batch: int
    wait: bool
    timeout_ms: int
    group: str
    auto_ack: bool
    subscription_mode: str
    subscription_from: str
    partitions: int

    @property
    def may_park(self) -> bool:
        """Whether a pop that finds nothing waits for messages rather than answering 204."""
        return self.wait and self.timeout_ms > 0

    def request(self, target: PopTarget) -> PopRequest:
        """One attempt at `target`, with a fresh lease id."""
        return PopRequest(
            group=self.group,
            batch=self.batch,
            partitions=self.partitions,
            auto_ack=self.auto_ack,
            subscription_mode=self.subscription_mode,
            subscription_from=self.subscription_from,
            lease_id=uuid7_str(),
            queue=target.queue,
            partition=target.partition,
            namespace=target.namespace,
            task=target.task,
        )


def pop_params(args: Mapping[str, str], config: Config) -> PopParams:
    batch = query_int(args, "batch", config.default_batch_size)
    if batch <= 0:
        raise BadRequest("batch must be a positive integer")
    if batch > config.max_pop_batch:
        raise BadRequest(f"batch must be at most {config.max_pop_batch}")
    timeout_ms = query_int(args, "timeout", config.default_timeout)
    if timeout_ms < 0:
        raise BadRequest("timeout must not be negative")
    partitions = query_int(args, "partitions", 1)
    if partitions <= 0 or partitions > 1000:
        raise BadRequest("partitions must be between 1 and 1000")
    mode = optional_string(args.get("subscriptionMode"), "subscriptionMode")
    mode = mode or config.default_subscription_mode
    subscription_from = subscription_start(
        optional_string(args.get("subscriptionFrom"), "subscriptionFrom") or ""
    )
    return PopParams(
        batch=batch,
        wait=query_bool(args, "wait"),
        timeout_ms=min(timeout_ms, 3_600_000),
        group=group_name(args.get("consumerGroup")),
        auto_ack=query_bool(args, "autoAck"),
        subscription_mode="new" if mode in ("new", "new-only") else mode,
        subscription_from=subscription_from,
        partitions=partitions,
    )


def lease_seconds(body: Any) -> int:
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    seconds = body.get("seconds", 60)
    if seconds is None:
        return 60
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 86_400:
        raise BadRequest("seconds must be an integer between 1 and 86400")
    return seconds
