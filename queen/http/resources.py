"""Queue resources: list, inspect and delete queues (`/api/v1/resources/queues`)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from queen.db import queues
from queen.errors import BadRequest
from queen.http import validate
from queen.http.context import services
from queen.http.responses import json_response
from queen.sync.events import QueueChanged

blueprint = Blueprint("resources", __name__, url_prefix="/api/v1/resources")


@blueprint.get("/queues")
async def list_queues() -> Response:
    filters: dict[str, Any] = {}
    if request.args.get("name"):
        filters["name"] = validate.name(request.args["name"], "name")
    for key in ("namespace", "task", "search"):
        if request.args.get(key):
            filters[key] = validate.text(request.args[key], key)
    for key in ("limit", "offset"):
        if key in request.args:
            value = validate.query_int(request.args, key, -1)
            if not 0 <= value <= validate.MAX_OPTION_VALUE:
                raise BadRequest(
                    f"{key} must be a non-negative integer (at most {validate.MAX_OPTION_VALUE})"
                )
            filters[key] = value
    return json_response(await queues.list_queues(services(), filters))


@blueprint.get("/queues/<queue>")
async def queue_detail(queue: str) -> Response:
    queue = validate.name(queue, "queue")
    return json_response(await queues.queue_detail(services(), queue))


@blueprint.delete("/queues/<queue>")
async def delete_queue(queue: str) -> Response:
    queue = validate.name(queue, "queue")
    svc = services()
    result = await queues.delete_queue(svc, queue)
    svc.announce(QueueChanged(queue, deleted=True))
    return json_response(result)
