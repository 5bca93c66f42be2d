"""Maintenance switches and the disk buffer's state (`/api/v1/system/maintenance[/pop]`,
`/api/v1/status/buffers`).

The maintenance routes report the buffer of the whole instance (every worker's directory, counted
from disk), because clients poll bufferedMessages until 0 to learn that every buffered push is in
PostgreSQL; /status/buffers, /health and /metrics report the answering worker's own counters."""

from __future__ import annotations

from quart import Blueprint, Response

from queen.actors.system_flags import MAINTENANCE, POP_MAINTENANCE
from queen.db import resources
from queen.errors import BadRequest, ServiceUnavailable
from queen.http.context import services
from queen.http.responses import json_object, json_response

blueprint = Blueprint("maintenance", __name__, url_prefix="/api/v1")


async def _enabled() -> bool:
    enabled = (await json_object()).get("enabled")
    if not isinstance(enabled, bool):
        raise BadRequest("enabled (boolean) is required")
    return enabled


@blueprint.get("/system/maintenance")
async def get_maintenance() -> Response:
    svc = services()
    await svc.flags.refresh()
    buffer = svc.file_buffer
    stats = await buffer.instance_stats()
    return json_response(
        {
            "maintenanceMode": svc.flags.maintenance,
            "popMaintenanceMode": svc.flags.pop_maintenance,
            "bufferedMessages": stats["pendingCount"],
            "bufferHealthy": buffer.db_healthy,
            "bufferStats": stats,
        }
    )


@blueprint.post("/system/maintenance")
async def set_maintenance() -> Response:
    enabled = await _enabled()
    svc = services()
    if enabled and not svc.file_buffer.available:
        raise ServiceUnavailable("File buffer unavailable")
    await svc.flags.set(MAINTENANCE, enabled)
    stats = await svc.file_buffer.instance_stats()
    return json_response(
        {
            "maintenanceMode": enabled,
            "bufferedMessages": stats["pendingCount"],
            "bufferHealthy": svc.file_buffer.db_healthy,
            "message": "Maintenance mode enabled: pushes are buffered to disk"
            if enabled
            else "Maintenance mode disabled: buffered pushes are being replayed",
        }
    )


@blueprint.get("/system/maintenance/pop")
async def get_pop_maintenance() -> Response:
    svc = services()
    await svc.flags.refresh()
    return json_response(
        {
            "popMaintenanceMode": svc.flags.pop_maintenance,
            "message": _pop_message(svc.flags.pop_maintenance),
        }
    )


@blueprint.post("/system/maintenance/pop")
async def set_pop_maintenance() -> Response:
    enabled = await _enabled()
    await services().flags.set(POP_MAINTENANCE, enabled)
    return json_response({"popMaintenanceMode": enabled, "message": _pop_message(enabled)})


def _pop_message(enabled: bool) -> str:
    return "Pop maintenance enabled: pops answer empty" if enabled else "Pop maintenance disabled"


@blueprint.get("/status/buffers")
async def buffer_status() -> Response:
    svc = services()
    return json_response(
        {
            "pending": svc.file_buffer.pending,
            "failed": svc.file_buffer.directory.failed,
            "dbHealthy": svc.file_buffer.db_healthy,
            "worker": svc.worker_id,
        }
    )


@blueprint.post("/stats/refresh")
async def refresh_stats() -> Response:
    """The original recomputes cached statistics here; ours are read from the live tables on every
    request, so there is nothing to recompute. Answered for the clients' admin refresh call."""
    queue_count, partition_count = await resources.resource_counts(services())
    return json_response(
        {
            "success": True,
            "statistics": "live",
            "queue": {"queues": queue_count},
            "partition": {"partitions": partition_count},
        }
    )
