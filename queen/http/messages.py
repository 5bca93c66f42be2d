"""Message administration: list and inspect messages, delete one, retry it, move it to the DLQ,
clear a queue.

Message state is derived in SQL from cursors, leases and DLQ rows (sql/006_messages_traces.sql).
Refusals the procedures must make atomically (unknown message, a move the cursor cannot express)
are raised there with our own SQLSTATEs and become 404/409 here, so a refused request has changed
nothing. The helpers at the top are shared with the trace and resource routes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from quart import Blueprint, Response, request

from queen.actors.slots import DatabaseError, SlotPool
from queen.errors import SQLSTATE_ERRORS, BadRequest, NotFound
from queen.http import validate
from queen.http.context import services
from queen.http.responses import json_object, json_response

blueprint = Blueprint("messages", __name__, url_prefix="/api/v1")

MAX_LIMIT = 1000
MAX_ERROR_TEXT = 10_000
STATUSES = ("pending", "processing", "completed", "dead_letter")


async def call(pool: SlotPool, sql: str, *args: Any) -> Any:
    """One procedure call whose QN404/QN409 refusals reach the client as 404/409."""
    try:
        return await pool.call(sql, *args, kind="fetchval")
    except DatabaseError as error:
        refusal = SQLSTATE_ERRORS.get(error.sqlstate or "")
        if refusal is None:
            raise
        raise refusal(str(error)) from None


def partition_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest("partitionId must be a UUID") from None


def transaction_id(value: str) -> str:
    if not value or len(value) > validate.MAX_NAME:
        raise BadRequest(f"transactionId must be 1 to {validate.MAX_NAME} characters")
    return value


def page(default_limit: int) -> dict[str, int]:
    """`limit`/`offset` from the query; out-of-range values are refused, not clamped, so a client
    paging through results never silently gets a different page than it asked for."""
    limit = validate.query_int(request.args, "limit", default_limit)
    offset = validate.query_int(request.args, "offset", 0)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise BadRequest("offset must not be negative")
    return {"limit": limit, "offset": offset}


def timestamp(key: str) -> str | None:
    """An ISO-8601 query timestamp, re-rendered so PostgreSQL always parses what Python accepted;
    one without a zone is UTC, as every timestamp queen writes."""
    raw = request.args.get(key)
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{key} must be an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.isoformat()


def name_filters(**keys: tuple[str, ...]) -> dict[str, str]:
    """Exact-match name filters; each filter may be spelt several ways in the query."""
    filters: dict[str, str] = {}
    for key, spellings in keys.items():
        for spelling in spellings:
            value = request.args.get(spelling)
            if value:
                filters[key] = validate.name(value, spelling)
                break
    return filters


@blueprint.get("/messages")
async def list_messages() -> Response:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
    filters: dict[str, Any] = {
        **page(200),
        **name_filters(
            queue=("queue",),
            partition=("partition",),
            namespace=("ns", "namespace"),
            task=("task",),
        ),
        "status": status,
        "from": timestamp("from"),
        "to": timestamp("to"),
    }
    result = await call(services().admin, "SELECT queen.list_messages($1::jsonb)", filters)
    return json_response(result)


@blueprint.get("/messages/<partition>/<path:transaction>")
async def message_detail(partition: str, transaction: str) -> Response:
    result = await call(
        services().admin,
        "SELECT queen.message_detail($1::uuid, $2)",
        partition_id(partition),
        transaction_id(transaction),
    )
    if result is None:
        raise NotFound("Message not found")
    return json_response(result)


@blueprint.delete("/messages/<partition>/<path:transaction>")
async def delete_message(partition: str, transaction: str) -> Response:
    result = await call(
        services().hot,
        "SELECT queen.delete_message($1::uuid, $2)",
        partition_id(partition),
        transaction_id(transaction),
    )
    return json_response(result)


@blueprint.post("/messages/<partition>/<path:transaction>/retry")
async def retry_message(partition: str, transaction: str) -> Response:
    """Without a `consumerGroup` (the official admin client sends no body) the retry applies to
    every group that dead-lettered the message, or to queue mode when none did."""
    body = await json_object()
    group = validate.group_name(body["consumerGroup"]) if body.get("consumerGroup") else None
    svc = services()
    result = await call(
        svc.hot,
        "SELECT queen.retry_message($1::uuid, $2, $3)",
        partition_id(partition),
        transaction_id(transaction),
        group,
    )
    if any(outcome["action"] == "rewound" for outcome in result["groups"]):
        svc.consumer_groups.wake_queue(result["queue"])
    return json_response(result)


@blueprint.post("/messages/<partition>/<path:transaction>/dlq")
async def move_to_dead_letters(partition: str, transaction: str) -> Response:
    body = await json_object()
    group = validate.group_name(body.get("consumerGroup"))
    error = validate.optional_string(body.get("error"), "error") or None
    if error is not None and len(error) > MAX_ERROR_TEXT:
        raise BadRequest(f"error must be at most {MAX_ERROR_TEXT} characters")
    svc = services()
    result = await call(
        svc.hot,
        "SELECT queen.dead_letter_message($1::uuid, $2, $3, $4)",
        partition_id(partition),
        transaction_id(transaction),
        group,
        error,
    )
    if not result["alreadyInDlq"]:
        # The lease was released: the rest of the holder's batch is deliverable again.
        svc.consumer_groups.wake_queue(result["queue"], group)
    return json_response(result)


@blueprint.route("/queues/<queue>/clear", methods=["POST", "DELETE"])
async def clear_queue(queue: str) -> Response:
    """DELETE with `?partition=` is what the official admin client sends; POST is the documented
    form. Both clear the whole queue unless a partition is named."""
    queue = validate.name(queue, "queue")
    partition = request.args.get("partition")
    if request.method == "POST" and partition is None:
        body = await json_object()
        partition = validate.optional_string(body.get("partition"), "partition")
    if partition is not None:
        partition = validate.name(partition, "partition")
    result = await call(services().hot, "SELECT queen.clear_queue($1, $2)", queue, partition)
    return json_response(result)
