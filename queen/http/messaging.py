"""Core messaging routes: configure, push, pop (queue, partition, namespace/task), ack, ack batch,
transaction, lease extension. Each handler validates, hands the request to a batcher lane or the
consumer-group actors, and shapes the reply; status codes are the intended ones (quirk Q1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from quart import Blueprint, Response, request

from queen.actors.consumer_groups import GroupKey, Scope
from queen.actors.ingest import Destination
from queen.db import queues
from queen.db.errors import DatabaseError, DatabaseUnavailable
from queen.db.items import PushItem, RenewItem
from queen.errors import BadRequest, TryAgainLater
from queen.http import push_body, validate
from queen.http.context import services
from queen.http.responses import json_body, json_object, json_response, no_content, raw_body
from queen.ids import uuid7_str

blueprint = Blueprint("messaging", __name__, url_prefix="/api/v1")


@blueprint.post("/configure")
async def configure() -> Response:
    spec = validate.configure(await json_body())
    svc = services()
    result = await queues.configure_queue(svc, spec)
    svc.queue_scopes.learn(spec["queue"], spec["namespace"], spec["task"])
    return json_response(result)


@blueprint.post("/push")
async def push() -> Response:
    svc = services()
    items = push_body.push_items(
        await raw_body(), svc.config.max_request_items, push_body.producer_sub_of(request.scope)
    )
    if not items:
        return json_response([], 201)
    outcome = await svc.ingest.push(items)
    if outcome.destination is Destination.DATABASE:
        assert outcome.results is not None
        for index, result in enumerate(outcome.results):  # the lane numbered the fused batch
            result["index"] = index
        return json_response(outcome.results, 201)
    if outcome.destination is Destination.BUFFER:
        return json_response(
            _each_item(items, "buffered", lambda item: {"transactionId": item.transaction_id}),
            201,
        )
    # Neither PostgreSQL nor the disk took the items and nothing of them was kept (a failed
    # append is cut back off its file): an outage, not our fault, so 503 and a time to retry.
    response = json_response(
        _each_item(items, "failed", lambda _: {"error": "File buffer write failed"}), 503
    )
    response.headers["Retry-After"] = str(TryAgainLater.retry_after_s)
    return response


def _each_item(
    items: list[PushItem], status: str, detail: Callable[[PushItem], dict[str, str]]
) -> list[dict[str, Any]]:
    """The answer for items that did not reach PostgreSQL: one entry per item, in order."""
    return [
        {
            "index": index,
            "status": status,
            "queue": item.queue,
            "partition": item.partition,
            **detail(item),
        }
        for index, item in enumerate(items)
    ]


@blueprint.get("/pop/queue/<queue>")
async def pop_queue(queue: str) -> Response:
    queue = validate.name(queue, "queue")
    return await _pop(validate.PopTarget(queue=queue), ("queue", queue, ""))


@blueprint.get("/pop/queue/<queue>/partition/<partition>")
async def pop_partition(queue: str, partition: str) -> Response:
    queue = validate.name(queue, "queue")
    partition = validate.name(partition, "partition")
    return await _pop(
        validate.PopTarget(queue=queue, partition=partition), ("queue", queue, partition)
    )


@blueprint.get("/pop")
async def pop_namespace_task() -> Response:
    namespace = validate.text(request.args.get("namespace") or "", "namespace")
    task = validate.text(request.args.get("task") or "", "task")
    if not namespace and not task:
        raise BadRequest("namespace or task is required")
    target = validate.PopTarget(namespace=namespace or None, task=task or None)
    return await _pop(target, ("task", namespace, task))


async def _pop(target: validate.PopTarget, wake_scope: Scope) -> Response:
    svc = services()
    params = validate.pop_params(request.args, svc.config)
    if svc.flags.pop_maintenance:
        return no_content()
    groups = svc.consumer_groups
    seen_wakes = groups.wakes
    deadline = trio.current_time() + params.timeout_ms / 1000
    try:
        results = await svc.batcher.pop.submit([params.request(target)])
        result: dict[str, Any] | None = results[0]
    except (DatabaseError, DatabaseUnavailable):
        # Quirk Q20: a pop never answers 5xx (clients' consume loops would die); it is empty.
        result = None
    if not (result and result.get("messages")) and params.wait and params.timeout_ms > 0:
        key: GroupKey = (wake_scope, params.group)
        result = await groups.park(key, lambda: params.request(target), deadline, seen_wakes)
    if not result or not result.get("messages"):
        return no_content()
    for message in result["messages"]:
        message.pop("isEncrypted", None)
    return json_response(result)


@blueprint.post("/ack")
async def ack() -> Response:
    item = validate.ack_item(await json_object())
    results = await services().batcher.ack.submit([item])
    return json_response([_ack_result(0, results[0])])


@blueprint.post("/ack/batch")
async def ack_batch() -> Response:
    items = validate.ack_batch(await json_body(), services().config.max_request_items)
    if not items:
        return json_response([])
    results = await services().batcher.ack.submit(items)
    return json_response([_ack_result(index, result) for index, result in enumerate(results)])


def _ack_result(index: int, result: dict[str, Any]) -> dict[str, Any]:
    shaped = {key: value for key, value in result.items() if key != "consumerGroup"}
    shaped["index"] = index
    return shaped


@blueprint.post("/transaction")
async def transaction() -> Response:
    svc = services()
    ops = validate.transaction_ops(
        await json_body(), svc.config.max_request_items, push_body.producer_sub_of(request.scope)
    )
    ops = await svc.encryption.seal_transaction(ops)
    results = await svc.batcher.transaction.submit([ops])
    outcome: dict[str, Any] = results[0]
    body = {"transactionId": uuid7_str(), **outcome}
    for entry in body.get("results", []):
        entry.pop("consumerGroup", None)
        entry.pop("leaseReleased", None)
        entry.pop("status", None)
    return json_response(body)


@blueprint.post("/lease/<lease_id>/extend")
async def extend_lease(lease_id: str) -> Response:
    lease_id = validate.uuid_text(lease_id, "leaseId must be a UUID")
    seconds = validate.lease_seconds(await json_body())
    results = await services().batcher.renew.submit([RenewItem(lease_id, seconds)])
    return json_response(results[0])
