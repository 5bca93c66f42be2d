"""Bad input to the three `/streams/v1/*` routes: each malformed field is a 4xx naming it, answered
before any database work, and nothing is written (checked with SQL after all of them)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, run_sql

SINK = unique("bad-sink")
QUERY = "bad-input-query"
VALID_ID = "00000000-0000-4000-8000-000000000001"
LEASE = "00000000-0000-4000-8000-000000000002"


def register_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": unique("bad-q"), "source_queue": "src", "config_hash": "h"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _ABSENT}


def state_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"query_id": VALID_ID, "partition_id": VALID_ID, "keys": []}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _ABSENT}


def cycle_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "query_id": "<query>",
        "partition_id": "<partition>",
        "consumer_group": "streams.bad",
        "state_ops": [{"type": "upsert", "key": "k", "value": 1}],
        "push_items": [{"queue": SINK, "payload": {"v": 1}}],
        "ack": None,
        "release_lease": True,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _ABSENT}


_ABSENT = object()
OP = {"type": "upsert", "key": "k", "value": 1}
ACK = {"transactionId": "t", "leaseId": LEASE, "status": "completed", "count": 1}

CASES: list[tuple[str, str, Any, int, str]] = [
    ("register: array body", "/queries", [1], 400, "must be a JSON object"),
    ("register: empty body", "/queries", None, 400, "name is required"),
    ("register: name number", "/queries", register_body(name=5), 400, "name is required"),
    ("register: name empty", "/queries", register_body(name=""), 400, "name is required"),
    ("register: name NUL", "/queries", register_body(name="a\x00b"), 400, "NUL"),
    ("register: no source", "/queries", register_body(source_queue=_ABSENT), 400, "source_queue"),
    ("register: hash list", "/queries", register_body(config_hash=["x"]), 400, "config_hash"),
    ("register: sink number", "/queries", register_body(sink_queue=3), 400, "sink_queue"),
    ("register: name long", "/queries", register_body(name="n" * 1025), 400, "at most 1024"),
    ("register: sink long", "/queries", register_body(sink_queue="s" * 256), 400, "at most 255"),
    ("register: reset text", "/queries", register_body(reset="yes"), 400, "reset must be"),
    ("state: no query", "/state/get", state_body(query_id=_ABSENT), 400, "query_id is required"),
    ("state: query int", "/state/get", state_body(query_id=7), 400, "query_id is required"),
    ("state: bad uuid", "/state/get", state_body(partition_id="unknown"), 400, "partition_id"),
    ("state: keys ints", "/state/get", state_body(keys=[1, 2]), 400, "keys must be"),
    ("state: key NUL", "/state/get", state_body(keys=["a\x00"]), 400, "NUL"),
    ("state: prefix int", "/state/get", state_body(key_prefix=4), 400, "key_prefix"),
    ("cycle: scalar body", "/cycle", "x", 400, "must be a JSON object"),
    ("cycle: no query", "/cycle", cycle_body(query_id=_ABSENT), 400, "query_id is required"),
    ("cycle: empty uuid", "/cycle", cycle_body(query_id=""), 400, "query_id must be a UUID"),
    ("cycle: bad partition", "/cycle", cycle_body(partition_id="unknown"), 400, "partition_id"),
    ("cycle: group int", "/cycle", cycle_body(consumer_group=1), 400, "consumer_group"),
    ("cycle: group long", "/cycle", cycle_body(consumer_group="g" * 256), 400, "consumer_group"),
    ("cycle: group NUL", "/cycle", cycle_body(consumer_group="g\x00"), 400, "NUL"),
    ("cycle: ops object", "/cycle", cycle_body(state_ops={"a": 1}), 400, "state_ops must be"),
    ("cycle: items text", "/cycle", cycle_body(push_items="x"), 400, "push_items must be"),
    ("cycle: op scalar", "/cycle", cycle_body(state_ops=[OP, 3]), 400, "state_ops[1]"),
    (
        "cycle: op type",
        "/cycle",
        cycle_body(state_ops=[{**OP, "type": "merge"}]),
        400,
        "Unknown state_op type: merge",
    ),
    ("cycle: op no key", "/cycle", cycle_body(state_ops=[{"type": "delete"}]), 400, ".key must"),
    ("cycle: key NUL", "/cycle", cycle_body(state_ops=[{**OP, "key": "\x00"}]), 400, "NUL"),
    (
        "cycle: value NUL",
        "/cycle",
        cycle_body(state_ops=[{**OP, "value": {"s": "a\x00"}}]),
        400,
        "NUL",
    ),
    ("cycle: item no queue", "/cycle", cycle_body(push_items=[{"payload": 1}]), 400, "Queue"),
    (
        "cycle: item trace",
        "/cycle",
        cycle_body(push_items=[{"queue": SINK, "traceId": "nope"}]),
        400,
        "TraceId",
    ),
    (
        "cycle: payload NUL",
        "/cycle",
        cycle_body(push_items=[{"queue": SINK, "payload": "\x00"}]),
        400,
        "NUL",
    ),
    ("cycle: ack list", "/cycle", cycle_body(ack=[ACK]), 400, "ack must be an object or null"),
    (
        "cycle: ack no txid",
        "/cycle",
        cycle_body(ack={**ACK, "transactionId": ""}),
        400,
        "ack.transactionId is required",
    ),
    ("cycle: ack lease", "/cycle", cycle_body(ack={**ACK, "leaseId": "L"}), 400, "ack.leaseId"),
    (
        "cycle: ack status",
        "/cycle",
        cycle_body(ack={**ACK, "status": "maybe"}),
        400,
        "Unknown ack.status: maybe",
    ),
    ("cycle: ack count", "/cycle", cycle_body(ack={**ACK, "count": -1}), 400, "ack.count"),
    ("cycle: count float", "/cycle", cycle_body(ack={**ACK, "count": 1.5}), 400, "ack.count"),
    ("cycle: release text", "/cycle", cycle_body(release_lease="no"), 400, "release_lease"),
    (
        "cycle: huge state_ops",
        "/cycle",
        cycle_body(state_ops=[{"type": "delete", "key": str(i)} for i in range(10_001)]),
        413,
        "state_ops",
    ),
    ("cycle: unknown query", "/cycle", cycle_body(query_id=str(uuid.uuid4())), 404, "not found"),
]


@pytest.mark.timeout(90)
async def test_every_malformed_field_is_refused_and_nothing_is_written(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    async with Api(server.url) as api:
        status, registered = await api.request(
            "POST",
            "/streams/v1/queries",
            json={"name": QUERY, "source_queue": "src", "config_hash": "h"},
        )
        assert status == 200, registered
        await api.push("bad-src", [{"n": 1}], partition="p0")
        popped = await api.pop("bad-src", batch=1)
        assert popped is not None
        known = {
            "<query>": registered["query_id"],
            "<partition>": popped["messages"][0]["partitionId"],
        }
        refused = []
        for label, route, case_body, expected, fragment in CASES:
            body = case_body
            if isinstance(body, dict):
                body = {k: known.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
            sent: dict[str, Any] = {"content": b""} if body is None else {"json": body}
            status, answer = await api.request("POST", f"/streams/v1{route}", **sent)
            if status != expected or fragment not in (answer or {}).get("error", ""):
                refused.append((label, status, answer))
        assert refused == []

    written = run_sql(
        pg_cluster,
        "SELECT (SELECT count(*) FROM queen_streams.state) AS state,"
        " (SELECT count(*) FROM queen_streams.queries) AS queries,"
        " (SELECT count(*) FROM queen.queues WHERE name = $1) AS sink",
        SINK,
        database=database,
    )
    assert dict(written[0]) == {"state": 0, "queries": 1, "sink": 0}
