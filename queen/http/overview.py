"""System-wide resource summaries: overview, partitions, namespaces, tasks
(`/api/v1/resources/...`; operations spec §4.2, §4.5).

Every figure is computed from the live tables on each request rather than from a stats cache, so
the numbers can never disagree with what pop delivers, including right after deletions (O10, O11).
"""

from __future__ import annotations

from quart import Blueprint, Response

from queen.http.context import services
from queen.http.query import name_filters, page
from queen.http.responses import json_response

blueprint = Blueprint("overview", __name__, url_prefix="/api/v1/resources")


@blueprint.get("/overview")
async def overview() -> Response:
    result = await services().admin.call("SELECT queen.resources_overview()", kind="fetchval")
    return json_response(result)


@blueprint.get("/partitions")
async def list_partitions() -> Response:
    filters = {
        **page(100),
        **name_filters(queue=("queue",), namespace=("namespace", "ns"), task=("task",)),
    }
    result = await services().admin.call(
        "SELECT queen.list_partitions($1::jsonb)", filters, kind="fetchval"
    )
    return json_response(result)


@blueprint.get("/namespaces")
async def namespaces() -> Response:
    result = await services().admin.call(
        "SELECT queen.resources_by_label($1)", "namespace", kind="fetchval"
    )
    return json_response({"namespaces": result})


@blueprint.get("/tasks")
async def tasks() -> Response:
    result = await services().admin.call(
        "SELECT queen.resources_by_label($1)", "task", kind="fetchval"
    )
    return json_response({"tasks": result})
