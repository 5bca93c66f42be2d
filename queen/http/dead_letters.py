"""The dead-letter queue listing (`GET /api/v1/dlq`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quart import Blueprint, Response, request

from queen.errors import BadRequest
from queen.http import validate
from queen.http.context import services
from queen.http.responses import json_response

blueprint = Blueprint("dead_letters", __name__, url_prefix="/api/v1")

MAX_LIMIT = 1000


def _timestamp(key: str) -> str | None:
    raw = request.args.get(key)
    if not raw:
        return None
    try:
        datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{key} must be an ISO-8601 timestamp") from None
    return raw


@blueprint.get("/dlq")
async def list_dead_letters() -> Response:
    limit = validate.query_int(request.args, "limit", 100)
    offset = validate.query_int(request.args, "offset", 0)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise BadRequest("offset must not be negative")
    filters: dict[str, Any] = {"limit": limit, "offset": offset,
                               "from": _timestamp("from"), "to": _timestamp("to")}
    for key in ("queue", "consumerGroup", "partition"):
        if request.args.get(key):
            filters[key] = request.args[key]
    result = await services().admin.call(
        "SELECT queen.list_dead_letters($1::jsonb)", filters, kind="fetchval"
    )
    for message in result["messages"]:
        message.pop("isEncrypted", None)
    return json_response(result)
