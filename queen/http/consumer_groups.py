"""Consumer-group administration (spec §4.9): lag reports, deletes, seeks, subscription changes.

Every input is checked before the database is called, so a rejected request changes nothing.
Unknown groups are not errors where the official client treats any 4xx as an exception for an
operation users run as cleanup (delete, subscription) or where the spec promises `{}` (detail);
a seek, which only makes sense on a position the group has, answers 404 when there is none.

POST handlers read the request body before anything can reject the request: under quart-trio a
response sent while the body is still unread sometimes never reaches the client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quart import Blueprint, Response, request

from queen.db import consumer_groups as groups
from queen.errors import BadRequest
from queen.http import validate
from queen.http.context import services
from queen.http.responses import json_object, json_response

blueprint = Blueprint("consumer_groups", __name__, url_prefix="/api/v1/consumer-groups")

DEFAULT_MIN_LAG_SECONDS = 3600
MAX_MIN_LAG_SECONDS = 10 * 365 * 86_400


def _timestamp(value: Any, what: str) -> datetime:
    """An ISO-8601 instant (`validate.instant`: UTC when it has no offset, the zone every
    timestamp the server emits is in, rather than the database session's zone)."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be an ISO-8601 timestamp string")
    parsed = validate.instant(value)
    if parsed is None:
        raise BadRequest(f"{what} must be an ISO-8601 timestamp")
    return parsed


def _delete_metadata() -> bool:
    """Strict, unlike other boolean parameters: reading a typo as the default (true) would
    destroy the subscription metadata the caller meant to keep."""
    raw = request.args.get("deleteMetadata")
    if raw is None:
        return True
    if raw not in ("true", "1", "false", "0"):
        raise BadRequest("deleteMetadata must be true or false")
    return raw in ("true", "1")


def _min_lag_seconds() -> int:
    seconds = validate.query_int(request.args, "minLagSeconds", DEFAULT_MIN_LAG_SECONDS, whole=True)
    if not 0 <= seconds <= MAX_MIN_LAG_SECONDS:
        raise BadRequest(f"minLagSeconds must be an integer between 0 and {MAX_MIN_LAG_SECONDS}")
    return seconds


def _seek_result(result: dict[str, Any], queue: str, group: str) -> Response:
    """Failures keep the spec's `{"success": false, "error"}` body; a moved cursor may have made
    messages available to long-polls of the group parked in this worker, so they look now."""
    if not result["success"]:
        return json_response(result, 404)
    services().notify(queue, group)
    return json_response(result)


@blueprint.get("")
async def list_groups() -> Response:
    return json_response(await groups.list_consumer_groups(services()))


@blueprint.get("/lagging")
async def lagging() -> Response:
    return json_response(await groups.lagging_partitions(services(), _min_lag_seconds()))


@blueprint.get("/<group>")
async def group_detail(group: str) -> Response:
    group = validate.name(group, "consumerGroup")
    return json_response(await groups.consumer_group_detail(services(), group))


@blueprint.delete("/<group>")
async def delete_group(group: str) -> Response:
    group = validate.name(group, "consumerGroup")
    result = await groups.delete_consumer_group(
        services(), group, None, delete_metadata=_delete_metadata()
    )
    services().notify(None, group)
    return json_response(result)


@blueprint.delete("/<group>/queues/<queue>")
async def delete_group_for_queue(group: str, queue: str) -> Response:
    """Long-polls of the group parked on this queue look again at once: the group now starts
    over there, so its history is pending."""
    group = validate.name(group, "consumerGroup")
    queue = validate.name(queue, "queue")
    result = await groups.delete_consumer_group(
        services(), group, queue, delete_metadata=_delete_metadata()
    )
    services().notify(queue, group)
    return json_response(result)


@blueprint.post("/<group>/subscription")
async def update_subscription(group: str) -> Response:
    body = await json_object()
    group = validate.name(group, "consumerGroup")
    raw = body.get("subscriptionTimestamp")
    if raw is None or raw == "":
        raise BadRequest("Missing subscriptionTimestamp in request body")
    timestamp = _timestamp(raw, "subscriptionTimestamp")
    return json_response(
        await groups.update_consumer_group_subscription(services(), group, timestamp)
    )


@blueprint.post("/<group>/queues/<queue>/seek")
async def seek_queue(group: str, queue: str) -> Response:
    body = await json_object()
    group = validate.name(group, "consumerGroup")
    queue = validate.name(queue, "queue")
    to_end = body.get("toEnd")
    if to_end is not None and not isinstance(to_end, bool):
        raise BadRequest("toEnd must be true or false")
    timestamp: datetime | None = None
    if not to_end:
        raw = body.get("timestamp")
        if raw is None or raw == "":
            raise BadRequest("Must specify either 'toEnd': true or 'timestamp'")
        timestamp = _timestamp(raw, "timestamp")
    result = await groups.seek_consumer_group(
        services(), group, queue, to_end=bool(to_end), timestamp=timestamp
    )
    return _seek_result(result, queue, group)


@blueprint.post("/<group>/queues/<queue>/partitions/<partition>/seek")
async def seek_partition(group: str, queue: str, partition: str) -> Response:
    await request.get_data(cache=False)  # takes no body, but see the module docstring
    group = validate.name(group, "consumerGroup")
    queue = validate.name(queue, "queue")
    partition = validate.name(partition, "partition")
    result = await groups.seek_partition(services(), group, queue, partition)
    return _seek_result(result, queue, group)
