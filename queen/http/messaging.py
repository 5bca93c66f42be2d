"""The transport-free cores of the core messaging routes: configure, push, pop (queue, partition,
namespace/task), ack, ack batch, lease extension. Each validates, hands the request to a batcher
lane or the consumer-group actors, and shapes the reply as an `Answer`; status codes are the
intended ones (quirk Q1). The lean path (queen/http/lean.py) calls them straight, quart's routes
(queen/http/messaging_routes.py) for the spellings the lean path leaves to it, so both serve them
alike; nothing here imports quart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import trio

from queen.actors.consumer_groups import GroupKey, Scope
from queen.actors.ingest import Destination
from queen.actors.root import Services
from queen.db import queues
from queen.db.errors import DatabaseError, DatabaseUnavailable
from queen.db.items import PushItem, RenewItem
from queen.errors import BadRequest, TryAgainLater
from queen.http import push_body, validate
from queen.http.answers import NO_CONTENT, Answer, json_answer, parse_json, parse_object
from queen.sync.events import QueueChanged, original_config


async def configure_answer(svc: Services, raw: bytes) -> Answer:
    spec = validate.configure(parse_json(raw))
    result = await queues.configure_queue(svc, spec)
    svc.queue_scopes.learn(spec["queue"], spec["namespace"], spec["task"])
    config = original_config(spec["namespace"], spec["task"], spec["options"])
    svc.announce(QueueChanged(spec["queue"], config=config))
    return json_answer(result)


async def push_answer(svc: Services, raw: bytes, producer_sub: str | None) -> Answer:
    """The answer to a push body: the handler core both the lean path and quart call;
    `producer_sub` is the verified token's sub (None with JWT off)."""
    items = push_body.push_items(raw, svc.config.max_request_items, producer_sub)
    if not items:
        return json_answer([], 201)
    outcome = await svc.ingest.push(items)
    if outcome.destination is Destination.DATABASE:
        assert outcome.results is not None
        for index, result in enumerate(outcome.results):  # the lane numbered the fused batch
            result["index"] = index
        return json_answer(outcome.results, 201)
    if outcome.destination is Destination.BUFFER:
        return json_answer(
            _each_item(items, "buffered", lambda item: {"transactionId": item.transaction_id}),
            201,
        )
    # Neither PostgreSQL nor the disk took the items and nothing of them was kept (a failed
    # append is cut back off its file): an outage, not our fault, so 503 and a time to retry.
    return json_answer(
        _each_item(items, "failed", lambda _: {"error": "File buffer write failed"}),
        503,
        (("Retry-After", str(TryAgainLater.retry_after_s)),),
    )


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


PopWhere = tuple[validate.PopTarget, Scope]


def queue_target(queue: str, partition: str | None = None) -> PopWhere:
    queue = validate.name(queue, "queue")
    if partition is None:
        return validate.PopTarget(queue=queue), ("queue", queue, "")
    partition = validate.name(partition, "partition")
    return validate.PopTarget(queue=queue, partition=partition), ("queue", queue, partition)


def namespace_task_target(args: Mapping[str, str]) -> PopWhere:
    namespace = validate.text(args.get("namespace") or "", "namespace")
    task = validate.text(args.get("task") or "", "task")
    if not namespace and not task:
        raise BadRequest("namespace or task is required")
    target = validate.PopTarget(namespace=namespace or None, task=task or None)
    return target, ("task", namespace, task)


class ClientLeft(Exception):
    """A pop's client left before its messages went out: their lease was given back (an
    autoAck pop holds none), and nothing is answered."""


async def pop_answer(
    svc: Services,
    where: PopWhere,
    params: validate.PopParams,
    client_left: Callable[[], bool] | None = None,
) -> Answer:
    """`client_left`, when given, is asked once messages are leased: a pop served without a
    task watching its connection (the lean path's non-waiting pops) gives them back if the
    client has gone, as the batcher does for a pop cancelled by its watcher. A pop that may
    park has sibling workers' wake-ups sent here while it runs (queen/sync/siblings.py)."""
    if svc.flags.pop_maintenance:
        return NO_CONTENT
    if not params.may_park:
        return await _pop_then_park(svc, where, params, client_left)
    with svc.siblings.listening():
        return await _pop_then_park(svc, where, params, client_left)


async def _pop_then_park(
    svc: Services,
    where: PopWhere,
    params: validate.PopParams,
    client_left: Callable[[], bool] | None,
) -> Answer:
    target, wake_scope = where
    groups = svc.consumer_groups
    seen_wakes = groups.wakes
    deadline = trio.current_time() + params.timeout_ms / 1000
    try:
        results = await svc.batcher.pop.submit([params.request(target)])
        result: dict[str, Any] | None = results[0]
    except (DatabaseError, DatabaseUnavailable):
        # Quirk Q20: a pop never answers 5xx (clients' consume loops would die); it is empty.
        result = None
    if not (result and result.get("messages")) and params.may_park:
        key: GroupKey = (wake_scope, params.group)
        result = await groups.park(key, lambda: params.request(target), deadline, seen_wakes)
    if not result or not result.get("messages"):
        return NO_CONTENT
    if client_left is not None and client_left():
        svc.give_back_undelivered(result)
        raise ClientLeft()
    for message in result["messages"]:
        message.pop("isEncrypted", None)
    return json_answer(result)


async def ack_answer(svc: Services, raw: bytes) -> Answer:
    item = validate.ack_item(parse_object(raw))
    results = await svc.batcher.ack.submit([item])
    return json_answer([_ack_result(0, results[0])])


async def ack_batch_answer(svc: Services, raw: bytes) -> Answer:
    items = validate.ack_batch(parse_json(raw), svc.config.max_request_items)
    if not items:
        return json_answer([])
    results = await svc.batcher.ack.submit(items)
    return json_answer([_ack_result(index, result) for index, result in enumerate(results)])


def _ack_result(index: int, result: dict[str, Any]) -> dict[str, Any]:
    shaped = {key: value for key, value in result.items() if key != "consumerGroup"}
    shaped["index"] = index
    return shaped


async def extend_answer(svc: Services, lease_id: str, raw: bytes) -> Answer:
    lease_id = validate.uuid_text(lease_id, "leaseId must be a UUID")
    seconds = validate.lease_seconds(parse_json(raw))
    results = await svc.batcher.renew.submit([RenewItem(lease_id, seconds)])
    return json_answer(results[0])
