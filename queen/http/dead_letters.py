"""The dead-letter queue listing (`GET /api/v1/dlq`)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from queen.db import messages
from queen.http.context import services
from queen.http.query import name_filters, page, timestamp
from queen.http.responses import json_response

blueprint = Blueprint("dead_letters", __name__, url_prefix="/api/v1")


@blueprint.get("/dlq")
async def list_dead_letters() -> Response:
    filters: dict[str, Any] = {
        **page(100),
        "from": timestamp("from"),
        "to": timestamp("to"),
        **name_filters(
            queue=("queue",), consumerGroup=("consumerGroup",), partition=("partition",)
        ),
    }
    svc = services()
    result = await messages.list_dead_letters(svc, filters)
    svc.encryption.open_all(result["messages"], "data")
    for message in result["messages"]:
        message.pop("isEncrypted", None)
    return json_response(result)
