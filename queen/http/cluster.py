"""The cluster routes: what cluster sync knows (the original's shared-state object, D-U10, under
its three paths) and the original's manual wake-up. All ADMIN (the access gate's table)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from queen.errors import BadRequest
from queen.http import validate
from queen.http.context import services
from queen.http.responses import json_object, json_response

blueprint = Blueprint("cluster", __name__)


def shared_state() -> dict[str, Any]:
    svc = services()
    state = svc.cluster.shared_state()
    scopes = svc.queue_scopes
    looked = scopes.hits + scopes.misses
    state["queue_config_cache"] = {
        "size": scopes.size,
        "hits": scopes.hits,
        "misses": scopes.misses,
        "hit_rate": round(scopes.hits / looked, 4) if looked else 0.0,
    }
    state.setdefault("server_health", {})
    state["maintenance_mode"] = svc.flags.maintenance
    state["pop_maintenance_mode"] = svc.flags.pop_maintenance
    return state


@blueprint.get("/api/v1/system/shared-state")
@blueprint.get("/internal/api/shared-state/stats")
@blueprint.get("/internal/api/inter-instance/stats")
async def get_shared_state() -> Response:
    return json_response(shared_state())


@blueprint.post("/internal/api/notify")
async def notify() -> Response:
    body = await json_object()
    if not isinstance(body.get("queue"), str) or not body["queue"]:
        raise BadRequest("queue is required")
    services().notify(validate.name(body["queue"], "queue"))
    return json_response({"status": "ok"})
