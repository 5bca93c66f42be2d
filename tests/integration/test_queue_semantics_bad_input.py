"""Bad input to the issue #5 routes that the other modules do not cover: DLQ listing filters,
trace data and names that PostgreSQL cannot store, queue listing filters, negative or non-integer
delivery-shaping options, non-boolean maintenance switches, timestamps out of range, and a group
that never saw the message it is asked about.

Each refused request must answer a 4xx whose `{"error"}` names the problem, and leave every table
a request could touch exactly as it was (compared row by row, before and after). The module's
tests run one at a time on a database of their own, so any difference is the request's doing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, run_sql

pytestmark = pytest.mark.timeout(60)

TABLES = (
    "queues",
    "partitions",
    "messages",
    "partition_consumers",
    "dead_letter_queue",
    "consumer_groups_metadata",
    "consumer_watermarks",
    "message_traces",
    "message_trace_names",
    "system_state",
)
SNAPSHOT_SQL = " UNION ALL ".join(
    f"SELECT '{table}' AS t, count(*) || ':' || "
    f"coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') AS digest "
    f"FROM queen.{table} x"
    for table in TABLES
)
NUL = "\x00"
LONG = "x" * 256
GROUPS = "/api/v1/consumer-groups"
QUEUE_MODE = "__QUEUE_MODE__"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class Env:
    api: Api
    cluster: PgCluster
    database: str
    queue: str
    dead: dict[str, Any]  # dead-lettered by group "workers"
    live: dict[str, Any]  # leased by group "workers"

    def snapshot(self) -> dict[str, str]:
        rows = run_sql(self.cluster, SNAPSHOT_SQL, database=self.database)
        return {row["t"]: row["digest"] for row in rows}

    async def refused(
        self, method: str, path: str, status: int, says: str, **kwargs: Any
    ) -> dict[str, Any]:
        """A request that must be refused with `status` and an error containing `says`, and must
        change nothing."""
        before = self.snapshot()
        code, body = await self.api.request(method, path.format(**self.names()), **kwargs)
        assert code == status, (method, path, kwargs, code, body)
        assert isinstance(body, dict) and says in body.get("error", ""), (path, kwargs, body)
        assert self.snapshot() == before, f"{method} {path} {kwargs} was refused but wrote"
        return body

    def names(self) -> dict[str, str]:
        return {
            "queue": self.queue,
            "pid": self.dead["partitionId"],
            "tx": self.dead["transactionId"],
        }


@pytest.fixture
async def env(server: ServerProcess, pg_cluster: PgCluster, database: str) -> AsyncIterator[Env]:
    """A queue with a message dead-lettered by group `workers` and one leased by it."""
    queue = unique("bad5")
    async with Api(server.url) as api:
        status, body = await api.request(
            "POST", "/api/v1/configure", json={"queue": queue, "options": {"retryLimit": 0}}
        )
        assert status == 200, body
        await api.push(queue, [{"n": 0}, {"n": 1}, {"n": 2}])
        first = await api.pop(queue, consumerGroup="workers")
        assert first is not None
        dead = first["messages"][0]
        assert (await api.ack(dead, "failed", error="boom"))["dlq"] is True
        second = await api.pop(queue, consumerGroup="workers")
        assert second is not None
        yield Env(api, pg_cluster, database, queue, dead, second["messages"][0])


async def test_dead_letter_listing_refuses_bad_filters(env: Env) -> None:
    cases: list[tuple[dict[str, str], str]] = [
        ({"limit": "-1"}, "limit must be between 1 and 1000"),
        ({"limit": "1001"}, "limit must be between 1 and 1000"),
        ({"offset": "-5"}, "offset must not be negative"),
        ({"from": "yesterday"}, "from must be an ISO-8601 timestamp"),
        ({"to": "2026-02-30T00:00:00Z"}, "to must be an ISO-8601 timestamp"),
        ({"to": "2026-01-01T00:00:00+25:00"}, "to must be an ISO-8601 timestamp"),
        ({"queue": f"a{NUL}b"}, "queue must not contain the NUL character"),
        ({"consumerGroup": f"w{NUL}"}, "consumerGroup must not contain the NUL character"),
        ({"partition": NUL}, "partition must not contain the NUL character"),
        ({"queue": LONG}, "queue must be 1 to 255 characters"),
        ({"consumerGroup": LONG}, "consumerGroup must be 1 to 255 characters"),
    ]
    for params, error in cases:
        await env.refused("GET", "/api/v1/dlq", 400, error, params=params)

    status, listing = await env.api.request(
        "GET", "/api/v1/dlq", params={"queue": env.queue, "consumerGroup": "workers"}
    )
    assert status == 200 and [m["transactionId"] for m in listing["messages"]] == [
        env.dead["transactionId"]
    ]
    status, unknown = await env.api.request(
        "GET", "/api/v1/dlq", params={"queue": env.queue, "consumerGroup": unique("nobody")}
    )
    assert (status, unknown["total"], unknown["messages"]) == (200, 0, []), "a filter, not an error"


async def test_trace_input_postgres_cannot_store_is_refused(env: Env) -> None:
    good = {
        "transactionId": env.live["transactionId"],
        "partitionId": env.live["partitionId"],
        "consumerGroup": "workers",
        "data": {"ok": True},
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "data": f"a{NUL}b"}, "data must not contain the NUL character"),
        ({**good, "data": {"k": [f"x{NUL}"]}}, "data must not contain the NUL character"),
        ({**good, "data": {f"k{NUL}": 1}}, "data must not contain the NUL character"),
        ({**good, "data": nested(201)}, "data nesting must not exceed 200 levels"),
        ({**good, "traceNames": ["ok", f"n{NUL}"]}, "trace names must not contain the NUL"),
        ({**good, "traceNames": f"n{NUL}"}, "trace names must not contain the NUL"),
        ({**good, "traceNames": ["n"] * 50 + [f"m{i}" for i in range(101)]}, "at most 100"),
    ]
    for body, error in cases:
        await env.refused("POST", "/api/v1/traces", 400, error, json=body)
    reads: list[tuple[str, dict[str, str], str]] = [
        ("/api/v1/traces/names", {"search": f"s{NUL}"}, "search must not contain the NUL"),
        ("/api/v1/traces/names", {"offset": "-1"}, "offset must not be negative"),
        ("/api/v1/traces/by-name/x", {"to": "never"}, "to must be an ISO-8601 timestamp"),
        ("/api/v1/traces/by-name/x", {"limit": "1001"}, "limit must be between 1 and 1000"),
    ]
    for path, params, error in reads:
        await env.refused("GET", path, 400, error, params=params)

    status, recorded = await env.api.request(
        "POST", "/api/v1/traces", json={**good, "data": nested(200)}
    )
    assert status == 201 and recorded["success"] is True, "the deepest data allowed is stored"
    path = f"/api/v1/traces/{env.live['partitionId']}/{env.live['transactionId']}"
    status, traces = await env.api.request("GET", path)
    assert status == 200 and [t["data"] for t in traces["traces"]] == [nested(200)]


async def test_queue_resources_refuse_bad_filters_and_names(env: Env) -> None:
    listing = "/api/v1/resources/queues"
    for key in ("namespace", "task", "search"):
        await env.refused(
            "GET", listing, 400, f"{key} must not contain the NUL", params={key: f"a{NUL}"}
        )
    for key in ("limit", "offset"):
        for value in ("-1", "x", str(2**31), "9" * 30):
            await env.refused(
                "GET", listing, 400, f"{key} must be a non-negative integer", params={key: value}
            )
    for method in ("GET", "DELETE"):
        await env.refused(method, listing + "/a%00b", 400, "queue must not contain the NUL")
        await env.refused(method, f"{listing}/{LONG}", 400, "queue must be 1 to 255 characters")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/dlq",
        "/api/v1/messages",
        "/api/v1/traces/by-name/x",
        "/api/v1/traces/names",
        "/api/v1/resources/partitions",
    ],
)
async def test_admin_listings_refuse_offsets_beyond_an_integer(env: Env, path: str) -> None:
    for offset in (str(2**31), "9" * 30):
        await env.refused(
            "GET", path, 400, "offset must be at most 2147483647", params={"offset": offset}
        )
    status, _ = await env.api.request("GET", path, params={"offset": str(2**31 - 1)})
    assert status == 200, "the largest offset is a valid (empty) page"


async def test_message_routes_refuse_a_nul_transaction_id(env: Env) -> None:
    message = "/api/v1/messages/{pid}/tx%00id"
    for method, path in (
        ("GET", message),
        ("DELETE", message),
        ("POST", message + "/retry"),
        ("POST", message + "/dlq"),
        ("GET", "/api/v1/traces/{pid}/tx%00id"),
    ):
        await env.refused(method, path, 400, "transactionId must not contain the NUL")


DELIVERY_OPTIONS = (
    "delayedProcessing",
    "windowBuffer",
    "maxSize",
    "priority",
    "leaseTime",
    "retryLimit",
    "retryDelay",
    "ttl",
    "retentionSeconds",
    "completedRetentionSeconds",
    "maxWaitTimeSeconds",
)


@pytest.mark.parametrize("option", DELIVERY_OPTIONS)
async def test_configure_refuses_negative_or_non_integer_options(env: Env, option: str) -> None:
    """Nothing is configured: neither the existing queue nor a new one."""
    status, before = await env.api.request("GET", f"/api/v1/resources/queues/{env.queue}")
    assert status == 200
    new_queue = unique("bad5-new")
    for value in (-1, -(2**31), 2**31, 1.5, "5", True, [1], {"seconds": 1}):
        for queue in (env.queue, new_queue):
            body = {"queue": queue, "options": {"retryLimit": 0, option: value}}
            await env.refused(
                "POST",
                "/api/v1/configure",
                400,
                f"options.{option} must be a non-negative integer",
                json=body,
            )
    status, after = await env.api.request("GET", f"/api/v1/resources/queues/{env.queue}")
    assert status == 200 and after["options"] == before["options"]
    status, _ = await env.api.request("GET", f"/api/v1/resources/queues/{new_queue}")
    assert status == 404


async def test_maintenance_switches_need_a_boolean(env: Env) -> None:
    bodies: list[tuple[dict[str, Any], str]] = [
        ({}, "enabled (boolean) is required"),
        ({"json": {}}, "enabled (boolean) is required"),
        ({"json": {"enabled": "true"}}, "enabled (boolean) is required"),
        ({"json": {"enabled": 1}}, "enabled (boolean) is required"),
        ({"json": {"enabled": 0}}, "enabled (boolean) is required"),
        ({"json": {"enabled": None}}, "enabled (boolean) is required"),
        ({"json": {"Enabled": True}}, "enabled (boolean) is required"),
        ({"json": [True]}, "Request body must be a JSON object"),
        (
            {"content": b"{enabled: true}", "headers": {"content-type": "application/json"}},
            "Invalid JSON",
        ),
    ]
    for path in ("/api/v1/system/maintenance", "/api/v1/system/maintenance/pop"):
        for kwargs, error in bodies:
            await env.refused("POST", path, 400, error, **kwargs)
    status, state = await env.api.request("GET", "/api/v1/system/maintenance")
    assert status == 200
    assert (state["maintenanceMode"], state["popMaintenanceMode"]) == (False, False)
    [pushed] = await env.api.push(env.queue, [{"after": True}])
    assert pushed["status"] == "queued", "pushes still go straight to the database"


async def test_seek_and_subscription_refuse_timestamps_out_of_range(env: Env) -> None:
    """Valid ISO-8601 text whose instant falls outside what a timestamp can hold once moved to
    UTC, and group names PostgreSQL cannot store."""
    seek = GROUPS + "/workers/queues/{queue}/seek"
    for timestamp in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-02-29"):
        await env.refused(
            "POST",
            seek,
            400,
            "timestamp must be an ISO-8601 timestamp",
            json={"timestamp": timestamp},
        )
        await env.refused(
            "POST",
            GROUPS + "/workers/subscription",
            400,
            "subscriptionTimestamp must be an ISO-8601 timestamp",
            json={"subscriptionTimestamp": timestamp},
        )
    nul_group = "w%00rkers"
    for method, path, kwargs in (
        ("POST", f"{GROUPS}/{nul_group}/queues/{{queue}}/seek", {"json": {"toEnd": True}}),
        ("POST", f"{GROUPS}/{nul_group}/queues/{{queue}}/partitions/Default/seek", {}),
        ("POST", f"{GROUPS}/{nul_group}/subscription", {"json": {"subscriptionTimestamp": "now"}}),
        ("DELETE", f"{GROUPS}/{nul_group}", {}),
        ("DELETE", f"{GROUPS}/{nul_group}/queues/{{queue}}", {}),
    ):
        await env.refused(method, path, 400, "consumerGroup must not contain the NUL", **kwargs)
    result = await env.api.ack(env.live)
    assert result["success"] is True, "the group's lease survived every refused request"


async def test_a_group_without_a_position_cannot_seek_and_a_retry_for_it_changes_nothing(
    env: Env,
) -> None:
    stranger = unique("stranger")
    for body in ({"toEnd": True}, {"timestamp": "2020-01-01T00:00:00Z"}):
        refusal = await env.refused(
            "POST", f"{GROUPS}/{stranger}/queues/{{queue}}/seek", 404, "no position", json=body
        )
        assert refusal["success"] is False

    before = env.snapshot()
    status, retried = await env.api.request(
        "POST",
        f"/api/v1/messages/{env.dead['partitionId']}/{env.dead['transactionId']}/retry",
        json={"consumerGroup": stranger},
    )
    assert status == 200, retried
    assert retried["groups"] == [
        {"consumerGroup": stranger, "action": "pending", "redelivered": 0, "deadLettersRemoved": 0}
    ]
    assert env.snapshot() == before, "a retry for a group that never saw the message is a no-op"


async def test_an_unparsable_subscription_from_is_ignored(env: Env) -> None:
    """Spec §3.4: a subscriptionFrom that is not a timestamp is ignored, so the group starts at
    the beginning, and no subscription is recorded for it (not a 4xx: the original's contract)."""
    for value in ("not a timestamp", "2026-13-45T00:00:00Z"):
        group = unique("from")
        popped = await env.api.pop(env.queue, consumerGroup=group, subscriptionFrom=value, batch=10)
        assert popped is not None
        assert [m["data"] for m in popped["messages"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
        rows = run_sql(
            env.cluster,
            "SELECT count(*) AS n FROM queen.consumer_groups_metadata WHERE consumer_group = $1",
            group,
            database=env.database,
        )
        assert rows[0]["n"] == 0
