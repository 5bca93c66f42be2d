"""Input that once reached a 500 or PostgreSQL's own error (issue #13, "no input gets a 500"):
bodies nested a thousand deep, ids Python's uuid module reads but PostgreSQL or asyncpg do not,
integers spelt with non-ASCII digits or thousands of them, and UTC offsets with seconds.

A refusal is a 400 whose `{"error"}` names the field, and leaves every table as it was; an id or
timestamp PostgreSQL can read is accepted in any of its spellings and means the same instant or
row. (tests/integration/test_hostile_sweep.py sends such values to every route; this module pins
down what each one must do.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.integration.test_queue_semantics_bad_input import SNAPSHOT_SQL
from tests.support import ServerProcess, run_sql

pytestmark = pytest.mark.timeout(60)

DEPTHS = (1000, 100_000)
# An offset of one hour, thirty and a half seconds: Python reads it, PostgreSQL does not.
ODD_OFFSET = timezone(timedelta(hours=1, seconds=30, milliseconds=500))


@dataclass
class Env:
    api: Api
    cluster: PgCluster
    database: str

    def snapshot(self) -> dict[str, str]:
        rows = run_sql(self.cluster, SNAPSHOT_SQL, database=self.database)
        return {row["t"]: row["digest"] for row in rows}

    async def refused(self, method: str, path: str, says: str, **kwargs: Any) -> None:
        """A 400 whose (non-empty) error contains `says`, and no table changed."""
        before = self.snapshot()
        status, body = await self.api.request(method, path, **kwargs)
        assert status == 400, (method, path, status, body)
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, str) and error and says in error, (path, body)
        assert self.snapshot() == before, f"{method} {path} was refused but wrote"

    async def leased(self, queue: str | None = None) -> dict[str, Any]:
        queue = queue or unique("hostile")
        await self.api.push(queue, [{"n": 1}])
        popped = await self.api.pop(queue)
        assert popped is not None
        message: dict[str, Any] = popped["messages"][0]
        return message


@pytest.fixture
async def env(server: ServerProcess, pg_cluster: PgCluster, database: str) -> AsyncIterator[Env]:
    async with Api(server.url) as api:
        yield Env(api, pg_cluster, database)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def json_with(template: str, depth: int) -> dict[str, Any]:
    """A raw JSON body: `template` with DEEP replaced by a value nested `depth` deep (too deep for
    the client's own encoder)."""
    body = template.replace("DEEP", deep(depth)).encode()
    return {"content": body, "headers": {"content-type": "application/json"}}


# --- depth --------------------------------------------------------------------------------------

DEEP_BODIES = [
    ("/api/v1/push", '{"items": [{"queue": "q", "payload": DEEP}]}', ""),
    ("/api/v1/push", '{"items": [{"queue": "q", "payload": 1}, {"queue": DEEP}]}', ""),
    ("/api/v1/push", '{"items": [{"queue": "q", "traceId": DEEP}]}', ""),
    ("/api/v1/transaction", '{"operations": [{"type": DEEP}]}', ""),
    (
        "/api/v1/transaction",
        '{"operations": [{"type": "push", "items": [{"queue": "q", "payload": DEEP}]}]}',
        "",
    ),
    ("/api/v1/ack", '{"transactionId": "t", "partitionId": "PID", "error": DEEP}', ""),
    (
        "/api/v1/ack/batch",
        '{"acknowledgments": [{"transactionId": "t", "partitionId": "PID", "error": DEEP}]}',
        "",
    ),
    ("/api/v1/configure", '{"queue": "q", "options": {"leaseTime": DEEP}}', ""),
    ("/api/v1/traces", '{"transactionId": "t", "partitionId": "PID", "data": DEEP}', ""),
]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize(("path", "template", "says"), DEEP_BODIES)
async def test_bodies_nested_a_thousand_deep_are_refused(
    env: Env, path: str, template: str, says: str, depth: int
) -> None:
    message = await env.leased()
    template = template.replace("PID", message["partitionId"])
    await env.refused("POST", path, says, **json_with(template, depth))


async def test_a_deep_push_fused_with_a_good_one_fails_only_itself(env: Env) -> None:
    queue = unique("deep")
    await env.refused(
        "POST", "/api/v1/push", "", **json_with(f'{{"items": [{{"queue": "{queue}"}}, DEEP]}}', 999)
    )
    assert (await env.api.push(queue, [{"ok": True}]))[0]["status"] == "queued"


# --- ids ----------------------------------------------------------------------------------------

REFUSED_IDS = [
    "urn:uuid:{id}",
    "{id}-",
    "{head}-{tail}",  # a hyphen where PostgreSQL allows none
    "{{{id}",  # an unclosed brace
    "{id} ",
]


def spelt(form: str, canonical: str) -> str:
    return form.format(id=canonical, head=canonical[:2], tail=canonical[2:])


@pytest.mark.parametrize("form", REFUSED_IDS)
async def test_ids_postgresql_cannot_read_are_refused_everywhere(env: Env, form: str) -> None:
    message = await env.leased()
    bad_partition = spelt(form, message["partitionId"])
    bad_lease = spelt(form, message["leaseId"])
    tx = message["transactionId"]
    ack = {"transactionId": tx, "partitionId": message["partitionId"]}
    await env.refused(
        "POST",
        "/api/v1/push",
        "TraceId must be a valid UUID",
        json={"items": [{"queue": unique("t"), "traceId": spelt(form, message["leaseId"])}]},
    )
    await env.refused(
        "POST",
        "/api/v1/ack",
        "partitionId must be a UUID",
        json={**ack, "partitionId": bad_partition},
    )
    await env.refused(
        "POST", "/api/v1/ack", "leaseId must be a UUID", json={**ack, "leaseId": bad_lease}
    )
    await env.refused(
        "POST",
        "/api/v1/ack/batch",
        "partitionId must be a UUID",
        json={"acknowledgments": [ack, {**ack, "partitionId": bad_partition}]},
    )
    await env.refused(
        "POST",
        "/api/v1/transaction",
        "leaseId must be a UUID",
        json={"operations": [{"type": "ack", **ack, "leaseId": bad_lease}]},
    )
    await env.refused("POST", f"/api/v1/lease/{bad_lease}/extend", "leaseId must be a UUID")
    for suffix in ("", "/retry", "/dlq"):
        method = "POST" if suffix else "GET"
        path = f"/api/v1/messages/{bad_partition}/{tx}{suffix}"
        await env.refused(method, path, "partitionId must be a UUID")
    await env.refused(
        "DELETE", f"/api/v1/messages/{bad_partition}/{tx}", "partitionId must be a UUID"
    )
    await env.refused("GET", f"/api/v1/traces/{bad_partition}/{tx}", "partitionId must be a UUID")
    trace = {"transactionId": tx, "partitionId": bad_partition, "data": 1}
    await env.refused("POST", "/api/v1/traces", "partitionId must be a UUID", json=trace)
    assert (await env.api.ack(message))["success"] is True, "the message was left as it was"


ACCEPTED_IDS = ["{{{id}}}", "{upper}", "{bare}", "{{{bare}}}"]


def respelt(form: str, canonical: str) -> str:
    return form.format(id=canonical, upper=canonical.upper(), bare=canonical.replace("-", ""))


@pytest.mark.parametrize("form", ACCEPTED_IDS)
async def test_ids_in_any_spelling_postgresql_reads_mean_the_same_row(env: Env, form: str) -> None:
    message = await env.leased()
    lease = respelt(form, message["leaseId"])
    status, renewed = await env.api.request("POST", f"/api/v1/lease/{lease}/extend")
    assert status == 200 and renewed["success"] is True, renewed
    assert renewed["leaseId"] == message["leaseId"]
    trace_id = respelt(form, message["leaseId"])
    pushed = await env.api.push(unique("traced"), [1], traceId=trace_id)
    assert pushed[0]["trace_id"] == message["leaseId"]
    result = await env.api.ack(
        message,
        partitionId=respelt(form, message["partitionId"]),
        leaseId=respelt(form, message["leaseId"]),
    )
    assert result["success"] is True, result


# --- integers -----------------------------------------------------------------------------------

ODD_INTEGERS = ["²", "①", "٣", "1²", "9" * 5000, "-0x10"]


@pytest.mark.parametrize("value", ODD_INTEGERS)
async def test_min_lag_seconds_takes_only_ascii_digits(env: Env, value: str) -> None:
    path = f"/api/v1/consumer-groups/lagging?minLagSeconds={value}"
    await env.refused("GET", path, "minLagSeconds must be an integer")


async def test_integer_parameters_read_ascii_digits_only_and_judge_huge_ones(env: Env) -> None:
    """Pagination and pop sizes read a leading integer as before; `٣` is no integer (it was 3),
    and 5000 digits are a number too large (they were silently the default)."""
    status, body = await env.api.request("GET", "/api/v1/messages", params={"limit": "٣"})
    assert status == 200 and body["pagination"]["limit"] == 200, body
    status, body = await env.api.request("GET", "/api/v1/messages", params={"limit": "7²"})
    assert status == 200 and body["pagination"]["limit"] == 7, body
    huge = "9" * 5000
    await env.refused("GET", "/api/v1/messages", "limit must be between", params={"limit": huge})
    await env.refused("GET", "/api/v1/dlq", "offset must be at most", params={"offset": huge})
    await env.refused("GET", "/api/v1/resources/queues", "limit", params={"limit": huge})
    await env.refused("GET", f"/api/v1/pop/queue/{unique('p')}", "batch", params={"batch": huge})


# --- timestamps ---------------------------------------------------------------------------------


def in_odd_offset(instant: datetime) -> str:
    return instant.astimezone(ODD_OFFSET).isoformat()


def parsed(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp).astimezone(UTC)


async def test_offsets_with_seconds_and_fractions_mean_their_instant(env: Env) -> None:
    """Each listing is asked for its own row with `from` a quarter second before it (included)
    and `to` a quarter second before it (excluded), in an offset of +01:00:30.5: dropping the
    half second would move either bound past the row."""
    queue, name = unique("odd"), unique("name")
    status, _ = await env.api.request(
        "POST", "/api/v1/configure", json={"queue": queue, "options": {"retryLimit": 0}}
    )
    assert status == 200
    message = await env.leased(queue)
    assert (await env.api.ack(message, "failed", error="boom"))["dlq"] is True
    trace = {**{k: message[k] for k in ("transactionId", "partitionId")}, "traceNames": [name]}
    status, _ = await env.api.request("POST", "/api/v1/traces", json={**trace, "data": 1})
    assert status == 201

    listings = [
        ("/api/v1/dlq", {"queue": queue}, "messages", "failedAt", True),
        (f"/api/v1/traces/by-name/{name}", {}, "traces", "created_at", True),
        ("/api/v1/messages", {"queue": queue}, "messages", "createdAt", False),
    ]
    for path, params, rows, field, bounded_above in listings:
        status, everything = await env.api.request("GET", path, params=params)
        assert status == 200 and len(everything[rows]) == 1, everything
        just_before = parsed(everything[rows][0][field]) - timedelta(milliseconds=250)
        status, body = await env.api.request(
            "GET", path, params={**params, "from": in_odd_offset(just_before)}
        )
        assert status == 200 and len(body[rows]) == 1, (path, body)
        if bounded_above:
            status, body = await env.api.request(
                "GET", path, params={**params, "to": in_odd_offset(just_before)}
            )
            assert status == 200 and body[rows] == [], (path, body)


async def test_subscription_from_in_an_odd_offset_starts_there(env: Env) -> None:
    """A group subscribing from just after the message sees nothing, one from just before sees it
    (PostgreSQL could not read the offset, and every group started from the beginning)."""
    queue = unique("sub")
    await env.api.push(queue, [{"n": 0}])
    status, listing = await env.api.request("GET", "/api/v1/messages", params={"queue": queue})
    assert status == 200
    created = parsed(listing["messages"][0]["createdAt"])
    quarter = timedelta(milliseconds=250)
    late = await env.api.pop(
        queue, consumerGroup="late", subscriptionFrom=in_odd_offset(created + quarter)
    )
    assert late is None
    early = await env.api.pop(
        queue, consumerGroup="early", subscriptionFrom=in_odd_offset(created - quarter)
    )
    assert early is not None and early["messages"][0]["data"] == {"n": 0}


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "2024-01-01T00:00:00+24:00"])
async def test_timestamps_beyond_what_utc_can_hold_are_refused(env: Env, stamp: str) -> None:
    for path in ("/api/v1/dlq", "/api/v1/messages", "/api/v1/traces/by-name/n"):
        await env.refused("GET", path, "from must be an ISO-8601 timestamp", params={"from": stamp})
