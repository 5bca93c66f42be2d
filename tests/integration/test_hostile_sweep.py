"""A hostile-input sweep over every route of the app (issue #13, "no input gets a 500"): each path
parameter, query parameter and JSON body field a route reads gets each hostile value in turn (NUL,
deep nesting, huge numbers, non-ASCII digits, id spellings, odd UTC offsets, sizes), the rest of
the request valid. Every answer must be 2xx, 4xx or 503; a 4xx carries a JSON `error`; no body
shows a traceback; and the server logs no unhandled error.

The routes come from the app's own url_map, so a new route is swept from the day it is added: its
path parameters at once, and the test refuses to pass until READS says which query parameters and
body fields it reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from queen.actors.root import Services
from queen.config import Config
from queen.http.app import create_app
from tests.support import ServerProcess

pytestmark = pytest.mark.timeout(180)

VALID_UUID = "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"
# Values a field may carry that JSON cannot spell as-is: replaced in the serialised body.
DEEP = {"\x01deep-1000": 1000, "\x01deep-100000": 100_000}
HOSTILE_TEXT = [
    "a\x00b",
    "²",
    "٣",
    "9" * 5000,
    "{" + VALID_UUID + "}",
    "urn:uuid:" + VALID_UUID,
    VALID_UUID + "-",
    "2024-01-01T00:00:00+01:00:30.5",
    "0001-01-01T00:00:00+01:00",
    "x" * 20_000,
]
# Only where the value travels percent-encoded (path and query): not UTF-8 once decoded.
INVALID_UTF8 = "%FF%FE"
HOSTILE_JSON: list[Any] = [
    *HOSTILE_TEXT,
    *DEEP,
    10**30,
    -1,
    {},
]
HOSTILE_BODIES = [b"\x00", b"\xff\xfe", b"[" * 100_000, b'{"a":' * 2000, b"1" * 5000]
# Path parameters by name; every route's other parameters keep these while one is hostile.
PATH_DEFAULTS = {"partition": VALID_UUID, "lease_id": VALID_UUID}


@dataclass(frozen=True)
class Reads:
    """What a route reads besides its path: query parameters with a valid value each, and a valid
    body with the paths (keys and list indexes) of the fields in it."""

    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    fields: tuple[tuple[str | int, ...], ...] = ()


PAGE = {"limit": "10", "offset": "0"}
SPAN = {"from": "2024-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}
DAY = {"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}  # reports refuse 500+ days
SCOPE = {"queue": "q", "namespace": "n", "task": "t"}
POP_QUERY = {
    "batch": "1",
    "wait": "false",
    "timeout": "10",
    "consumerGroup": "g",
    "autoAck": "false",
    "subscriptionMode": "all",
    "subscriptionFrom": "2024-01-01T00:00:00Z",
    "partitions": "1",
}
ITEM = {
    "queue": "sweep",
    "partition": "p",
    "payload": {"n": 1},
    "transactionId": "t-1",
    "traceId": VALID_UUID,
}
ITEM_FIELDS = (("items",), ("items", 0), *(("items", 0, key) for key in ITEM))
ACK = {
    "transactionId": "t-1",
    "partitionId": VALID_UUID,
    "leaseId": VALID_UUID,
    "status": "completed",
    "consumerGroup": "g",
    "error": "e",
}
STREAM_REGISTRATION = {
    "name": "sweep",
    "source_queue": "sweep",
    "sink_queue": "out",
    "config_hash": "h",
    "reset": False,
}
STREAM_SHARD = {"query_id": VALID_UUID, "partition_id": VALID_UUID}
STATE_OP = {"type": "upsert", "key": "k", "value": {"n": 1}}
STREAM_ACK = {"transactionId": "t-1", "leaseId": VALID_UUID, "status": "completed", "count": 1}
OPTIONS = ("leaseTime", "retryLimit", "priority", "delayedProcessing", "deadLetterQueue")
READS: dict[str, Reads] = {
    "static": Reads(),
    "system.health": Reads(),
    "system.metrics": Reads(),
    "messaging.configure": Reads(
        body={"queue": "sweep", "namespace": "n", "task": "t", "options": {"leaseTime": 30}},
        fields=(
            ("queue",),
            ("namespace",),
            ("task",),
            ("options",),
            *(("options", option) for option in OPTIONS),
        ),
    ),
    "messaging.push": Reads(body={"items": [ITEM]}, fields=ITEM_FIELDS),
    "messaging.pop_queue": Reads(query=POP_QUERY),
    "messaging.pop_partition": Reads(query=POP_QUERY),
    "messaging.pop_namespace_task": Reads(query={**POP_QUERY, "namespace": "n", "task": "t"}),
    "messaging.ack": Reads(body=ACK, fields=tuple((key,) for key in ACK)),
    "messaging.ack_batch": Reads(
        body={"acknowledgments": [ACK], "consumerGroup": "g"},
        fields=(
            ("acknowledgments",),
            ("consumerGroup",),
            *(("acknowledgments", 0, key) for key in ACK),
        ),
    ),
    "messaging.transaction": Reads(
        body={"operations": [{"type": "push", "items": [ITEM]}, {"type": "ack", **ACK}]},
        fields=(
            ("operations",),
            ("operations", 0, "type"),
            ("operations", 0, "items"),
            *(("operations", 0, "items", 0, key) for key in ITEM),
            *(("operations", 1, key) for key in ACK),
        ),
    ),
    "messaging.extend_lease": Reads(body={"seconds": 30}, fields=(("seconds",),)),
    "resources.list_queues": Reads(
        query={"name": "q", "namespace": "n", "task": "t", "search": "s", **PAGE}
    ),
    "resources.queue_detail": Reads(),
    "resources.delete_queue": Reads(),
    "dead_letters.list_dead_letters": Reads(
        query={**PAGE, **SPAN, "queue": "q", "consumerGroup": "g", "partition": "p"}
    ),
    "maintenance.get_maintenance": Reads(),
    "maintenance.set_maintenance": Reads(body={"enabled": False}, fields=(("enabled",),)),
    "maintenance.get_pop_maintenance": Reads(),
    "maintenance.set_pop_maintenance": Reads(body={"enabled": False}, fields=(("enabled",),)),
    "maintenance.buffer_status": Reads(),
    "maintenance.refresh_stats": Reads(),
    "cluster.get_shared_state": Reads(),
    "cluster.notify": Reads(body={"queue": "q"}, fields=(("queue",),)),
    "consumer_groups.list_groups": Reads(),
    "consumer_groups.lagging": Reads(query={"minLagSeconds": "60"}),
    "consumer_groups.group_detail": Reads(),
    "consumer_groups.delete_group": Reads(query={"deleteMetadata": "true"}),
    "consumer_groups.delete_group_for_queue": Reads(query={"deleteMetadata": "true"}),
    "consumer_groups.update_subscription": Reads(
        body={"subscriptionTimestamp": "2024-01-01T00:00:00Z"},
        fields=(("subscriptionTimestamp",),),
    ),
    "consumer_groups.seek_queue": Reads(
        body={"timestamp": "2024-01-01T00:00:00Z", "toEnd": False},
        fields=(("timestamp",), ("toEnd",)),
    ),
    "consumer_groups.seek_partition": Reads(),
    "messages.list_messages": Reads(
        query={
            **PAGE,
            **SPAN,
            "status": "pending",
            "queue": "q",
            "partition": "p",
            "ns": "n",
            "namespace": "n",
            "task": "t",
        }
    ),
    "messages.message_detail": Reads(),
    "messages.delete_message": Reads(),
    "messages.retry_message": Reads(body={"consumerGroup": "g"}, fields=(("consumerGroup",),)),
    "messages.move_to_dead_letters": Reads(
        body={"consumerGroup": "g", "error": "e"}, fields=(("consumerGroup",), ("error",))
    ),
    "messages.clear_queue": Reads(
        query={"partition": "p"}, body={"partition": "p"}, fields=(("partition",),)
    ),
    "traces.record_trace": Reads(
        body={
            "transactionId": "t-1",
            "partitionId": VALID_UUID,
            "consumerGroup": "g",
            "eventType": "info",
            "data": {"a": 1},
            "traceNames": ["n"],
        },
        fields=(
            ("transactionId",),
            ("partitionId",),
            ("consumerGroup",),
            ("eventType",),
            ("data",),
            ("traceNames",),
            ("traceNames", 0),
        ),
    ),
    "traces.trace_names": Reads(query={"search": "s", **PAGE}),
    "traces.traces_by_name": Reads(query={**PAGE, **SPAN}),
    "traces.traces_of_message": Reads(),
    "overview.overview": Reads(),
    "overview.list_partitions": Reads(
        query={**PAGE, "queue": "q", "ns": "n", "task": "t", "search": "s", "leases": "held"}
    ),
    "overview.namespaces": Reads(),
    "overview.tasks": Reads(),
    "streams.register_query": Reads(
        body=STREAM_REGISTRATION, fields=tuple((key,) for key in STREAM_REGISTRATION)
    ),
    "streams.state_get": Reads(
        body={**STREAM_SHARD, "keys": ["k"], "key_prefix": "k", "ripe_at_or_before": 1},
        fields=(*((key,) for key in STREAM_SHARD), ("keys",), ("keys", 0), ("key_prefix",)),
    ),
    "streams.cycle": Reads(
        body={
            **STREAM_SHARD,
            "consumer_group": "g",
            "state_ops": [STATE_OP],
            "push_items": [ITEM],
            "ack": {**STREAM_ACK},
            "release_lease": True,
        },
        fields=(
            *((key,) for key in STREAM_SHARD),
            ("consumer_group",),
            ("state_ops",),
            *(("state_ops", 0, key) for key in STATE_OP),
            ("push_items",),
            *(("push_items", 0, key) for key in ITEM),
            ("ack",),
            *(("ack", key) for key in STREAM_ACK),
            ("release_lease",),
        ),
    ),
    "prometheus.prometheus": Reads(),
    "status.overview": Reads(query={**DAY, **SCOPE}),
    "status.queues": Reads(query={**PAGE, **SCOPE}),
    "status.queue_detail": Reads(),
    "status.queue_messages": Reads(query=PAGE),
    "status.message_analytics": Reads(query={**DAY, **SCOPE, "interval": "hour"}),
    "status.worker_metrics": Reads(query={**DAY, "hostname": "h", "workerId": "0"}),
    "status.system_metrics": Reads(query={**DAY, "hostname": "h", "workerId": "0"}),
    "status.postgres_stats": Reads(),
    "status.queue_lag": Reads(query={**DAY, "queue": "q"}),
    "status.queue_ops": Reads(query={**DAY, "queue": "q"}),
    "status.queue_parked_replicas": Reads(query={**DAY, "queue": "q"}),
    "status.retention": Reads(query={**DAY, "queue": "q"}),
    "web.index": Reads(),
    "web.page_or_file": Reads(),
}


@dataclass(frozen=True)
class Route:
    endpoint: str
    method: str
    rule: str
    arguments: tuple[str, ...]


def app_routes() -> list[Route]:
    """Every (rule, method) the app serves (its actors are built, not started)."""
    app = create_app(Services(Config.from_env({"PG_HOST": "unused"}), 0))
    return [
        Route(rule.endpoint, method, rule.rule, tuple(sorted(rule.arguments)))
        for rule in app.url_map.iter_rules()
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    ]


def encoded(value: str) -> str:
    return value if value == INVALID_UTF8 else quote(value, safe="")


def path_of(route: Route, hostile: dict[str, str]) -> str:
    path = route.rule
    for argument in route.arguments:
        value = hostile.get(argument, PATH_DEFAULTS.get(argument, "sweep"))
        path = re.sub(rf"<(\w+:)?{argument}>", lambda _, v=value: encoded(v), path)
    return path


def query_of(values: dict[str, str]) -> str:
    return "&".join(f"{quote(key)}={encoded(value)}" for key, value in values.items())


def body_with(body: Any, at: tuple[str | int, ...], value: Any) -> bytes:
    """`body` with the field at `at` replaced, serialised; deep values are written out here
    (Python's encoder recurses and would fail on them)."""
    if not at:
        body = value
    else:
        body = json.loads(json.dumps(body))
        parent = body
        for step in at[:-1]:
            parent = parent[step]
        parent[at[-1]] = value
    text = json.dumps(body)
    for marker, depth in DEEP.items():
        text = text.replace(json.dumps(marker), "[" * depth + "]" * depth)
    return text.encode()


@dataclass(frozen=True)
class Probe:
    method: str
    url: str
    body: bytes | None
    what: str


def probes(route: Route) -> Iterator[Probe]:
    reads = READS.get(route.endpoint, Reads())
    base_body = None if reads.body is None else body_with(reads.body, (), reads.body)

    def probe(path: dict[str, str], query: dict[str, str], body: bytes | None, what: str) -> Probe:
        url = path_of(route, path)
        if query:
            url += "?" + query_of(query)
        return Probe(route.method, url, body, f"{route.method} {route.rule} {what}")

    for argument in route.arguments:
        for value in [*HOSTILE_TEXT, INVALID_UTF8]:
            yield probe({argument: value}, reads.query, base_body, f"path {argument}={value!r:.40}")
    for key in reads.query:
        for value in [*HOSTILE_TEXT, INVALID_UTF8]:
            query = {**reads.query, key: value}
            yield probe({}, query, base_body, f"query {key}={value!r:.40}")
    if route.method in ("POST", "PUT", "DELETE") and reads.body is not None:
        for at in reads.fields:
            for value in HOSTILE_JSON:
                body = body_with(reads.body, at, value)
                yield probe({}, reads.query, body, f"body {at}={value!r:.40}")
        for raw in HOSTILE_BODIES:
            yield probe({}, reads.query, raw, f"raw body {raw[:20]!r}")


def problem(probe: Probe, response: httpx.Response) -> str | None:
    """What is wrong with this answer, if anything."""
    text = response.text
    if "Traceback" in text or 'File "' in text:
        return f"{probe.what}: traceback in the body"
    status = response.status_code
    if status >= 500 and status != 503:
        return f"{probe.what}: {status} {text[:200]}"
    if 400 <= status < 500:
        try:
            body = response.json()
        except ValueError:
            return f"{probe.what}: {status} without a JSON body: {text[:200]}"
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            return f"{probe.what}: {status} without an error: {text[:200]}"
    return None


def test_every_route_is_described() -> None:
    """A new route must say what it reads, or the sweep would only try its path parameters."""
    missing = {route.endpoint for route in app_routes()} - set(READS)
    assert not missing, f"add these endpoints to READS: {sorted(missing)}"


async def test_no_hostile_input_gets_a_500(server: ServerProcess) -> None:
    all_probes = [probe for route in app_routes() for probe in probes(route)]
    problems: list[str] = []
    headers = {"content-type": "application/json"}

    async def send(client: httpx.AsyncClient, probe: Probe) -> None:
        response = await client.request(
            probe.method, probe.url, content=probe.body, headers=headers
        )
        found = problem(probe, response)
        if found:
            problems.append(found)

    async def worker(client: httpx.AsyncClient, queue: list[Probe]) -> None:
        while queue:
            await send(client, queue.pop())

    pending = list(reversed(all_probes))
    client = httpx.AsyncClient(base_url=server.url, timeout=30.0)
    with trio.fail_after(150):
        async with client, trio.open_nursery() as nursery:
            for _ in range(4):  # a few at a time: the server sees concurrent bad requests too
                nursery.start_soon(worker, client, pending)
    unhandled = server.log_path.read_text(errors="replace").count("unhandled error")
    summary = f"{len(problems)} of {len(all_probes)} probes failed; unhandled errors: {unhandled}"
    assert not problems and not unhandled, "\n".join([summary, *sorted(problems)[:80]])
