"""The dead-letter queue listing (`GET /api/v1/dlq`)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from queen.http.context import services
from queen.http.query import page, timestamp
from queen.http.responses import json_response

blueprint = Blueprint("dead_letters", __name__, url_prefix="/api/v1")


@blueprint.get("/dlq")
async def list_dead_letters() -> Response:
    filters: dict[str, Any] = {**page(100), "from": timestamp("from"), "to": timestamp("to")}
    for key in ("queue", "consumerGroup", "partition"):
        if request.args.get(key):
            filters[key] = request.args[key]
    result = await services().admin.call(
        "SELECT queen.list_dead_letters($1::jsonb)", filters, kind="fetchval"
    )
    for message in result["messages"]:
        message.pop("isEncrypted", None)
    return json_response(result)
