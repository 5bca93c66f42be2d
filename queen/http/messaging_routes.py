"""quart's routes for core messaging (configure, push, pop, ack, ack batch, transaction, lease
extension): the lean path (queen/http/lean.py) answers the plain spellings of most of them itself,
and these serve the rest (HEAD, a trailing slash, a GET with a body, ...) with the same cores
(queen/http/messaging.py). Transaction has no lean twin: it is rare and stays here.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from queen.http import push_body, validate
from queen.http.context import services
from queen.http.messaging import (
    PopWhere,
    ack_answer,
    ack_batch_answer,
    configure_answer,
    extend_answer,
    namespace_task_target,
    pop_answer,
    push_answer,
    queue_target,
)
from queen.http.responses import as_response, json_body, json_response, raw_body
from queen.ids import uuid7_str

blueprint = Blueprint("messaging", __name__, url_prefix="/api/v1")


@blueprint.post("/configure")
async def configure() -> Response:
    return as_response(await configure_answer(services(), await raw_body()))


@blueprint.post("/push")
async def push() -> Response:
    return as_response(
        await push_answer(services(), await raw_body(), push_body.producer_sub_of(request.scope))
    )


@blueprint.get("/pop/queue/<queue>")
async def pop_queue(queue: str) -> Response:
    return await _pop(queue_target(queue))


@blueprint.get("/pop/queue/<queue>/partition/<partition>")
async def pop_partition(queue: str, partition: str) -> Response:
    return await _pop(queue_target(queue, partition))


@blueprint.get("/pop")
async def pop_namespace_task() -> Response:
    return await _pop(namespace_task_target(request.args))


async def _pop(where: PopWhere) -> Response:
    """quart-trio cancels the request when its client leaves, parked or not."""
    svc = services()
    return as_response(await pop_answer(svc, where, validate.pop_params(request.args, svc.config)))


@blueprint.post("/ack")
async def ack() -> Response:
    return as_response(await ack_answer(services(), await raw_body()))


@blueprint.post("/ack/batch")
async def ack_batch() -> Response:
    return as_response(await ack_batch_answer(services(), await raw_body()))


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
    return as_response(await extend_answer(services(), lease_id, await raw_body()))
