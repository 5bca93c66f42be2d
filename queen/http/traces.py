"""Trace events: consumers record what happened to a message (`msg.trace()` in the clients); admins
read them back per message, per trace name, and as a list of names.

Response keys are snake_case because that is what the original emits (messaging spec §4.11). The
clients never let a failed trace escape to user code, so rejections only need to be clear.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from queen.db import traces
from queen.errors import BadRequest
from queen.http import validate
from queen.http.context import services
from queen.http.query import page, partition_id, timestamp, transaction_id
from queen.http.responses import json_object, json_response

blueprint = Blueprint("traces", __name__, url_prefix="/api/v1")

MAX_EVENT_TYPE = 100  # message_traces.event_type is varchar(100)
MAX_TRACE_NAMES = 100


def _trace_names(value: Any) -> list[str]:
    """null, one name or a list of names; empty names are dropped (the clients drop them too),
    duplicates collapse."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest("traceNames must be a string or an array of strings")
    distinct = list(dict.fromkeys(validate.text(n, "trace names") for n in names if n))
    if any(len(n) > validate.MAX_NAME for n in distinct):
        raise BadRequest(f"trace names must be at most {validate.MAX_NAME} characters")
    if len(distinct) > MAX_TRACE_NAMES:
        raise BadRequest(f"at most {MAX_TRACE_NAMES} trace names per event")
    return distinct


def _trace_event(body: dict[str, Any]) -> dict[str, Any]:
    transaction = body.get("transactionId")
    partition = body.get("partitionId")
    if not isinstance(transaction, str) or not isinstance(partition, str):
        raise BadRequest("transactionId and partitionId are required")
    if not transaction or not partition:
        raise BadRequest("transactionId and partitionId are required")
    if "data" not in body:
        raise BadRequest("data is required")
    event_type = validate.optional_string(body.get("eventType"), "eventType") or "info"
    if len(event_type) > MAX_EVENT_TYPE:
        raise BadRequest(f"eventType must be at most {MAX_EVENT_TYPE} characters")
    return {
        "transactionId": transaction_id(transaction),
        "partitionId": partition_id(partition),
        "consumerGroup": validate.group_name(body.get("consumerGroup")),
        "eventType": event_type,
        "data": validate.payload(body["data"], "data"),
        "traceNames": _trace_names(body.get("traceNames")),
    }


@blueprint.post("/traces")
async def record_trace() -> Response:
    svc = services()
    event = _trace_event(await json_object())
    event["workerId"] = str(svc.worker_id)
    return json_response(await traces.record_trace(svc, event), 201)


@blueprint.get("/traces/names")
async def trace_names() -> Response:
    search = validate.optional_string(request.args.get("search"), "search") or None
    if search is not None and len(search) > validate.MAX_NAME:
        raise BadRequest(f"search must be at most {validate.MAX_NAME} characters")
    query = {**page(50), "search": search}
    return json_response(await traces.trace_names(services(), query))


@blueprint.get("/traces/by-name/<path:name>")
async def traces_by_name(name: str) -> Response:
    query = {
        **page(100),
        "name": validate.name(name, "trace name"),
        "from": timestamp("from"),
        "to": timestamp("to"),
    }
    svc = services()
    result = await traces.traces_by_name(svc, query)
    svc.encryption.open_all(result.get("traces") or (), "message_payload")
    return json_response(result)


@blueprint.get("/traces/<partition>/<path:transaction>")
async def traces_of_message(partition: str, transaction: str) -> Response:
    result = await traces.traces_of_message(
        services(), partition_id(partition), transaction_id(transaction)
    )
    return json_response(result)
