"""The streaming SDK's routes (`/streams/v1/*`, streams-api.md): register a query, read a state
shard, commit a cycle. Bodies are validated up front (queen/http/streams_body.py); cycles go
through the batcher's `stream_cycle` lane, one transaction each.

A cycle's answer after validation is never a 5xx (S1): the clients retry 5xx, and a cycle without
an ack (an idle flush) is not idempotent. A cycle whose outcome this worker cannot know (its
connection dropped mid-call, or the budget ran out) answers `success: false` and is never run
again here (S8); an ack-bearing replay by the client is refused by the lease and cursor checks.
An unknown query answers 404, refused like bad input (nothing is written); sink items for an
encrypted queue on a server with no key loaded are refused 503 before anything runs, as on /push.
"""

from __future__ import annotations

from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, request

from queen.actors.mailbox import ActorGone
from queen.db import streams
from queen.db.errors import DatabaseError, DatabaseUnavailable, TransientDatabaseError
from queen.db.streams import Cycle
from queen.errors import Conflict
from queen.http import push_body, streams_body
from queen.http.context import services
from queen.http.responses import json_body, json_response

blueprint = Blueprint("streams", __name__, url_prefix="/streams/v1")

# Everything a cycle may take, the wait for a connection included: well inside the clients'
# 30 s request timeout (S18), so an answer always arrives before they give up and resend.
CYCLE_BUDGET_S = 25.0
_UNKNOWN_OUTCOME = (
    "outcome unknown ({}); the cycle was not retried, its batch comes back if it did not commit"
)


@blueprint.post("/queries")
async def register_query() -> Response:
    spec = streams_body.registration(streams_body.body_object(await json_body()))
    result = await streams.register_query(
        services(),
        spec.name,
        source_queue=spec.source_queue,
        sink_queue=spec.sink_queue,
        config_hash=spec.config_hash,
        reset=spec.reset,
    )
    if result.get("conflict"):
        del result["conflict"]
        return json_response(result, Conflict.status)
    return json_response(result)


@blueprint.post("/state/get")
async def state_get() -> Response:
    query = streams_body.state_query(streams_body.body_object(await json_body()))
    rows = await streams.read_state(
        services(),
        query.query_id,
        query.partition_id,
        keys=query.keys,
        key_prefix=query.key_prefix,
        ripe_at_or_before=query.ripe_at_or_before,
    )
    return json_response({"success": True, "rows": rows})


@blueprint.post("/cycle")
async def cycle() -> Response:
    svc = services()
    body = streams_body.cycle(
        streams_body.body_object(await json_body()),
        svc.config.max_request_items,
        push_body.producer_sub_of(request.scope),
    )
    if body.push_items:  # sealed like every other write path (queen/actors/encryption.py)
        body = msgspec.structs.replace(body, push_items=await svc.encryption.seal(body.push_items))
    outcome = await _commit(body)
    shaped: dict[str, Any] = {
        "success": bool(outcome.get("success")),
        "query_id": body.query_id,
        "partition_id": body.partition_id,
        "queueName": outcome.get("queueName"),
        "state_ops_applied": 0,
        "push_results": [],
        "ack_result": None,
    }
    if not shaped["success"]:
        shaped["error"] = outcome.get("error") or "cycle failed"
        return json_response(shaped, 404 if outcome.get("not_found") else 200)
    shaped["state_ops_applied"] = outcome["state_ops_applied"]
    shaped["push_results"] = outcome["push_results"]
    shaped["ack_result"] = outcome["ack_result"]
    return json_response(shaped)


async def _commit(body: Cycle) -> dict[str, Any]:
    """The procedure's answer, or a failure saying why there is none."""
    lane = services().batcher.stream_cycle
    try:
        with trio.move_on_after(CYCLE_BUDGET_S):
            results = await lane.submit([body])
            outcome: dict[str, Any] = results[0]
            return outcome
        return {"error": _UNKNOWN_OUTCOME.format(f"no answer within {CYCLE_BUDGET_S:g} s")}
    except (DatabaseUnavailable, ActorGone) as error:
        return {"error": _UNKNOWN_OUTCOME.format(f"database unavailable: {error}")}
    except TransientDatabaseError as error:
        return {"error": f"database {error.reason}; nothing was committed: {error}"}
    except DatabaseError as error:
        return {"error": str(error)}
