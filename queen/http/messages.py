"""Message administration: list and inspect messages, delete one, retry it, move it to the DLQ,
clear a queue.

Refusals the procedures make atomically (unknown message, a move the cursor cannot express) reach
the client as 404/409 through the error table (queen/errors.py): a refused request has changed
nothing (queen/db/messages.py).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from queen.db import messages, queues
from queen.errors import BadRequest
from queen.http import validate
from queen.http.context import services
from queen.http.query import name_filters, page, partition_id, timestamp, transaction_id
from queen.http.responses import json_object, json_response

blueprint = Blueprint("messages", __name__, url_prefix="/api/v1")

MAX_ERROR_TEXT = 10_000
STATUSES = ("pending", "processing", "completed", "dead_letter")


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
    return json_response(await messages.list_messages(services(), filters))


@blueprint.get("/messages/<partition>/<path:transaction>")
async def message_detail(partition: str, transaction: str) -> Response:
    svc = services()
    result = await messages.message_detail(
        svc, partition_id(partition), transaction_id(transaction)
    )
    flagged = result.get("isEncrypted") is True
    svc.encryption.open_field(result, "payload", flagged)
    svc.encryption.open_field(result, "data", flagged)
    return json_response(result)


@blueprint.delete("/messages/<partition>/<path:transaction>")
async def delete_message(partition: str, transaction: str) -> Response:
    result = await messages.delete_message(
        services(), partition_id(partition), transaction_id(transaction)
    )
    return json_response(result)


@blueprint.post("/messages/<partition>/<path:transaction>/retry")
async def retry_message(partition: str, transaction: str) -> Response:
    """Without a `consumerGroup` (the official admin client sends no body) the retry applies to
    every group that dead-lettered the message, or to queue mode when none did."""
    body = await json_object()
    group = validate.group_name(body["consumerGroup"]) if body.get("consumerGroup") else None
    svc = services()
    result = await messages.retry_message(
        svc, partition_id(partition), transaction_id(transaction), group
    )
    if any(outcome["action"] == "rewound" for outcome in result["groups"]):
        svc.notify(result["queue"])
    return json_response(result)


@blueprint.post("/messages/<partition>/<path:transaction>/dlq")
async def move_to_dead_letters(partition: str, transaction: str) -> Response:
    body = await json_object()
    group = validate.group_name(body.get("consumerGroup"))
    error = validate.optional_string(body.get("error"), "error") or None
    if error is not None and len(error) > MAX_ERROR_TEXT:
        raise BadRequest(f"error must be at most {MAX_ERROR_TEXT} characters")
    svc = services()
    result = await messages.dead_letter_message(
        svc, partition_id(partition), transaction_id(transaction), group, error
    )
    if not result["alreadyInDlq"]:
        # The lease was released: the rest of the holder's batch is deliverable again.
        svc.notify(result["queue"], group)
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
    return json_response(await queues.clear_queue(services(), queue, partition))
