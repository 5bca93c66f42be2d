"""System-wide resource summaries: overview, partitions, namespaces, tasks
(`/api/v1/resources/...`; operations spec §4.2, §4.5).

Every figure is computed from the live tables on each request rather than from a stats cache, so
the numbers can never disagree with what pop delivers, including right after deletions (O10, O11).
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from queen.db import resources
from queen.errors import BadRequest
from queen.http import validate
from queen.http.context import services
from queen.http.query import name_filters, page
from queen.http.responses import json_response

blueprint = Blueprint("overview", __name__, url_prefix="/api/v1/resources")


@blueprint.get("/overview")
async def overview() -> Response:
    return json_response(await resources.resources_overview(services()))


@blueprint.get("/partitions")
async def list_partitions() -> Response:
    filters: dict[str, object] = {
        **page(100),
        **name_filters(queue=("queue",), namespace=("namespace", "ns"), task=("task",)),
    }
    if request.args.get("search"):
        filters["search"] = validate.text(request.args["search"], "search")
    leases = request.args.get("leases")
    if leases:
        if leases not in ("held", "stuck"):
            raise BadRequest("leases must be held or stuck")
        filters["leases"] = leases
    return json_response(await resources.list_partitions(services(), filters))


@blueprint.get("/namespaces")
async def namespaces() -> Response:
    return json_response(
        {"namespaces": await resources.resources_by_label(services(), "namespace")}
    )


@blueprint.get("/tasks")
async def tasks() -> Response:
    return json_response({"tasks": await resources.resources_by_label(services(), "task")})
