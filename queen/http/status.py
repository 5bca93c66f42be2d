"""The status and analytics API (`/api/v1/status...`, `/api/v1/analytics/...`; operations spec
§4.6-§4.14) the dashboard and the admin clients read. Handlers only read and check the query
string; every figure comes from one procedure (queen/db/status.py). Unparsable or out-of-range
input is a 400 and an unknown queue a 404 (quirks O1-O4), never a 200 with an error inside."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from quart import Blueprint, Response, request

from queen.db import status
from queen.errors import BadRequest
from queen.http import validate
from queen.http.context import services
from queen.http.query import name_filters, page, time_window
from queen.http.responses import json_response

blueprint = Blueprint("status", __name__, url_prefix="/api/v1")

# Steps of /status/analytics; a month counts as its shortest, so the cap is never undercounted.
INTERVALS = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
    "month": timedelta(days=28),
}
MAX_POINTS = 2000


def _queue_filters() -> dict[str, str]:
    return name_filters(queue=("queue",), namespace=("namespace",), task=("task",))


def _window(default_span: timedelta) -> dict[str, str]:
    start, end = time_window(default_span)
    return {"from": start.isoformat(), "to": end.isoformat()}


def _replica_filters(worker_id_is_int: bool) -> dict[str, Any]:
    filters: dict[str, Any] = name_filters(hostname=("hostname",))
    raw = request.args.get("workerId")
    if raw:
        if worker_id_is_int:
            filters["workerId"] = validate.query_int(request.args, "workerId", 0, whole=True)
            if not 0 <= filters["workerId"] <= validate.MAX_OPTION_VALUE:
                raise BadRequest("workerId must be a worker index (a non-negative integer)")
        else:
            filters["workerId"] = validate.name(raw, "workerId")
    return filters


@blueprint.get("/status")
async def overview() -> Response:
    filters = {**_window(timedelta(hours=1)), **_queue_filters()}
    return json_response(await status.status(services(), filters))


@blueprint.get("/status/queues")
async def queues() -> Response:
    filters = {**page(100), **_queue_filters()}
    return json_response(await status.status_queues(services(), filters))


@blueprint.get("/status/queues/<queue>")
async def queue_detail(queue: str) -> Response:
    queue = validate.name(queue, "queue")
    return json_response(await status.status_queue(services(), queue))


@blueprint.get("/status/queues/<queue>/messages")
async def queue_messages(queue: str) -> Response:
    queue = validate.name(queue, "queue")
    paging = page(50)
    return json_response(
        await status.status_queue_messages(services(), queue, paging["limit"], paging["offset"])
    )


@blueprint.get("/status/analytics")
async def message_analytics() -> Response:
    interval = request.args.get("interval") or "hour"
    if interval not in INTERVALS:
        raise BadRequest(f"interval must be one of {', '.join(INTERVALS)}")
    start, end = time_window(timedelta(hours=24))
    if (end - start) / INTERVALS[interval] + 1 > MAX_POINTS:
        raise BadRequest("Range too large for interval")
    filters = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "interval": interval,
        **_queue_filters(),
    }
    return json_response(await status.message_analytics(services(), filters))


@blueprint.get("/analytics/worker-metrics")
async def worker_metrics() -> Response:
    filters = {**_window(timedelta(hours=1)), **_replica_filters(worker_id_is_int=True)}
    return json_response(await status.worker_metrics(services(), filters))


@blueprint.get("/analytics/system-metrics")
async def system_metrics() -> Response:
    filters = {**_window(timedelta(hours=1)), **_replica_filters(worker_id_is_int=False)}
    return json_response(await status.system_metrics(services(), filters))


@blueprint.get("/analytics/postgres-stats")
async def postgres_stats() -> Response:
    return json_response(await status.postgres_stats(services()))


def _queue_window() -> dict[str, str]:
    return {**_window(timedelta(hours=1)), **name_filters(queue=("queue",))}


@blueprint.get("/analytics/queue-lag")
async def queue_lag() -> Response:
    return json_response(await status.queue_lag(services(), _queue_window()))


@blueprint.get("/analytics/queue-ops")
async def queue_ops() -> Response:
    return json_response(await status.queue_ops(services(), _queue_window()))


@blueprint.get("/analytics/queue-parked-replicas")
async def queue_parked_replicas() -> Response:
    return json_response(await status.queue_parked_replicas(services(), _queue_window()))


@blueprint.get("/analytics/retention")
async def retention() -> Response:
    return json_response(await status.retention(services(), _queue_window()))
