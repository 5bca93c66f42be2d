"""Bad input over raw HTTP: every malformed or invalid request to the messaging routes gets a 4xx
with `{"error": "<message naming the problem>"}` and writes nothing.

"Nothing written" is checked against the database itself: a digest of every row of the tables a
messaging request can touch (queues, partitions, messages, cursors and leases, DLQ, consumption
counters, subscription metadata), taken before and after each rejected request. The module has its
database to itself and its tests run one at a time, so any difference is the request's doing.

Business failures that the API reports inside a 200 (ack of an unknown message, a stale lease, a
transaction whose ack fails, renewal of an unknown lease) are checked the same way. The module ends
with fuzzing (random JSON bodies never yield a 5xx) and a check that the server survived it all
without a single unhandled error.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queen.storage.pgcluster import PgCluster
from tests.integration.api import unique
from tests.support import ServerProcess, create_database, server_env

TABLES = (
    "queues",
    "partitions",
    "messages",
    "partition_consumers",
    "dead_letter_queue",
    "messages_consumed",
    "consumer_groups_metadata",
)
SNAPSHOT_SQL = " UNION ALL ".join(
    f"SELECT '{table}' AS t, count(*) || ':' || "
    f"coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') AS digest "
    f"FROM queen.{table} x"
    for table in TABLES
)
NUL = "\x00"
LONG = 256  # one past the 255-character limit on names
SMALL_BODY_LIMIT = 65536
JSON_HEADERS = {"content-type": "application/json"}


class Sql:
    """One connection kept open for the whole module (a fresh one per query costs ~20 ms, and this
    module takes two snapshots per test). asyncpg needs asyncio, the tests run on trio: the
    connection lives on an asyncio loop in a thread of its own."""

    def __init__(self, cluster: PgCluster, database: str) -> None:
        # A plain loop: once trio_asyncio is imported (other test modules do), the default
        # policy's loops are trio-bound and cannot run in a thread of their own.
        self.loop: asyncio.AbstractEventLoop = asyncio.SelectorEventLoop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        parts = {**cluster.dsn_parts(), "database": database}
        self.conn: asyncpg.Connection = self._run(asyncpg.connect(**parts))

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def fetch(self, query: str, *args: Any) -> list[Any]:
        rows: list[Any] = self._run(self.conn.fetch(query, *args))
        return rows

    def snapshot(self) -> dict[str, str]:
        return {row["t"]: row["digest"] for row in self.fetch(SNAPSHOT_SQL)}

    def close(self) -> None:
        self._run(self.conn.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def sql(server: ServerProcess, pg_cluster: PgCluster, database: str) -> Iterator[Sql]:
    """`server` first: it migrates the schema the snapshots read."""
    connection = Sql(pg_cluster, database)
    try:
        yield connection
    finally:
        connection.close()


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def request_kwargs(body: Any) -> dict[str, Any]:
    """Raw bytes go as they are (malformed JSON); anything else is JSON-encoded."""
    if isinstance(body, bytes):
        return {"content": body, "headers": {"content-type": "application/json"}}
    return {"json": body}


def error_of(response: httpx.Response) -> str:
    """The `error` of a JSON error body; fails unless the body is exactly that."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, str) and error.strip(), body
    assert "Traceback" not in error and 'File "' not in error, error
    return error


@dataclass
class Env:
    client: httpx.AsyncClient
    sql: Sql

    def snapshot(self) -> dict[str, str]:
        return self.sql.snapshot()

    async def rejected(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        status: int = 400,
        says: str | None = None,
        exactly: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Send a bad request; assert the status, a JSON error naming the problem, and that the
        database is exactly as it was."""
        before = self.snapshot()
        if body is not None:
            kwargs.update(request_kwargs(body))
        response = await self.client.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        error = error_of(response)
        if exactly is not None:
            assert error == exactly
        if says is not None:
            assert says.lower() in error.lower(), error
        assert self.snapshot() == before, f"{method} {path} was rejected but wrote something"
        return error

    async def push(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = await self.client.post("/api/v1/push", json={"items": items})
        assert response.status_code == 201, response.text
        result: list[dict[str, Any]] = response.json()
        return result

    async def pop(self, queue: str, **params: Any) -> dict[str, Any] | None:
        response = await self.client.get(f"/api/v1/pop/queue/{queue}", params=params)
        if response.status_code == 204:
            return None
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def leased_message(self) -> dict[str, Any]:
        """Push to a fresh queue and pop the message: a live lease is held on it."""
        queue = unique("bad")
        await self.push([{"queue": queue, "payload": {"n": 0}}])
        popped = await self.pop(queue, batch=1)
        assert popped is not None
        message: dict[str, Any] = popped["messages"][0]
        return message


@pytest.fixture(scope="module")
def sync_client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0, verify=False) as client:
        yield client


@dataclass(frozen=True)
class Seed:
    """State shared by the many rejected-request cases; none of them may change it, which each
    case checks by snapshot and a test after each group checks by using it."""

    pop_queue: str  # two messages, popped only by test_bad_pops_left_the_queue_untouched
    leased: dict[str, Any]  # a popped message, acked only by test_the_shared_lease_survived
    configured: str  # configured with leaseTime 77


@pytest.fixture(scope="module")
def seed(sync_client: httpx.Client) -> Seed:
    pop_queue, leased_queue, configured = unique("pop"), unique("leased"), unique("cfg")
    for queue, count in ((pop_queue, 2), (leased_queue, 2)):
        items = [{"queue": queue, "payload": n} for n in range(count)]
        assert sync_client.post("/api/v1/push", json={"items": items}).status_code == 201
    response = sync_client.get(f"/api/v1/pop/queue/{leased_queue}", params={"batch": "1"})
    assert response.status_code == 200, response.text
    body = {"queue": configured, "options": {"leaseTime": 77}}
    assert sync_client.post("/api/v1/configure", json=body).status_code == 200
    return Seed(pop_queue, response.json()["messages"][0], configured)


@pytest.fixture
async def env(server: ServerProcess, sql: Sql) -> AsyncIterator[Env]:
    # verify=False: plain HTTP anyway, and it spares building a TLS context (~0.1 s) per test.
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0, verify=False) as client:
        yield Env(client, sql)


def good_item(queue: str, n: int = 0) -> dict[str, Any]:
    return {"queue": queue, "partition": "p", "payload": {"n": n}}


def with_bad(bad: Any) -> Callable[[str], dict[str, Any]]:
    """A push body whose second item is `bad` (the first is valid, so atomicity is tested too)."""
    return lambda queue: {"items": [good_item(queue), bad]}


def bad_field(**fields: Any) -> Callable[[str], dict[str, Any]]:
    return lambda queue: {"items": [good_item(queue), {**good_item(queue + "-2"), **fields}]}


# --- push -----------------------------------------------------------------------------------------

PUSH_CASES: list[tuple[str, Callable[[str], Any], str, bool]] = [
    # (id, body for a queue name, expected error, exact?)
    ("items-missing", lambda q: {"queue": q}, "items array is required", True),
    ("items-null", lambda q: {"items": None}, "items array is required", True),
    ("items-object", lambda q: {"items": good_item(q)}, "items array is required", True),
    ("items-string", lambda q: {"items": "x"}, "items array is required", True),
    ("body-array", lambda q: [good_item(q)], "items array is required", True),
    ("body-string", lambda q: "items", "items array is required", True),
    ("body-number", lambda q: 42, "items array is required", True),
    ("item-not-object", with_bad(7), "object", False),
    ("item-null", with_bad(None), "object", False),
    ("item-array", with_bad([]), "object", False),
    ("queue-missing", with_bad({"payload": 1}), "Queue must be a string", True),
    ("queue-number", bad_field(queue=5), "Queue must be a string", True),
    ("queue-null", bad_field(queue=None), "Queue must be a string", True),
    ("queue-empty", bad_field(queue=""), "queue", False),
    ("queue-too-long", bad_field(queue="q" * LONG), "255", False),
    ("queue-nul", bad_field(queue=f"a{NUL}b"), "NUL", False),
    ("partition-number", bad_field(partition=5), "Partition must be a string", True),
    ("partition-object", bad_field(partition={}), "Partition must be a string", True),
    ("partition-too-long", bad_field(partition="p" * LONG), "Partition", False),
    ("partition-nul", bad_field(partition=NUL), "Partition", False),
    ("transactionId-number", bad_field(transactionId=5), "TransactionId must be a string", True),
    ("transactionId-too-long", bad_field(transactionId="t" * LONG), "TransactionId", False),
    ("transactionId-nul", bad_field(transactionId=f"t{NUL}"), "TransactionId", False),
    ("traceId-number", bad_field(traceId=5), "TraceId must be a string", True),
    ("traceId-not-uuid", bad_field(traceId="trace-1"), "TraceId must be a valid UUID", True),
    ("payload-nul", bad_field(payload={"a": [f"x{NUL}y"]}), "NUL", False),
    ("payload-key-nul", bad_field(payload={f"k{NUL}": 1}), "NUL", False),
    ("payload-too-deep", bad_field(payload=nested(201)), "nesting", False),
    ("json-truncated", lambda q: b'{"items": [', "Invalid JSON: ", False),
    ("json-trailing-comma", lambda q: b'{"items": [{"queue": "x"},]}', "Invalid JSON: ", False),
    ("json-single-quotes", lambda q: b"{'items': []}", "Invalid JSON: ", False),
    ("json-nan", lambda q: b'{"items": [{"queue": "x", "payload": NaN}]}', "Invalid JSON", False),
    ("not-utf8", lambda q: b'{"items": [{"queue": "\xff"}]}', "Invalid JSON", False),
    (
        "lone-surrogate",
        lambda q: b'{"items":[{"queue":"x","payload":"\\ud800"}]}',
        "Invalid",
        False,
    ),
    ("json-too-deep", lambda q: b"[" * 5000 + b"]" * 5000, "Invalid JSON", False),
]


@pytest.mark.parametrize(
    ("body", "message", "exact"),
    [pytest.param(body, message, exact, id=case) for case, body, message, exact in PUSH_CASES],
)
async def test_push_rejects_bad_input_and_stores_nothing(
    env: Env, body: Callable[[str], Any], message: str, exact: bool
) -> None:
    queue = unique("push")
    if exact:
        await env.rejected("POST", "/api/v1/push", body(queue), exactly=message)
    else:
        await env.rejected("POST", "/api/v1/push", body(queue), says=message)


async def test_push_of_no_items_answers_an_empty_array_and_writes_nothing(env: Env) -> None:
    before = env.snapshot()
    response = await env.client.post("/api/v1/push", json={"items": []})
    assert (response.status_code, response.json()) == (201, [])
    assert env.snapshot() == before


async def test_push_with_item_3_of_5_bad_stores_none_of_them(env: Env) -> None:
    queues = [unique("mixed") for _ in range(5)]
    items: list[Any] = [good_item(queue, n) for n, queue in enumerate(queues)]
    items[2] = {**items[2], "traceId": "not-a-uuid"}
    error = await env.rejected("POST", "/api/v1/push", {"items": items}, status=400)
    assert error == "TraceId must be a valid UUID"
    rows = env.sql.fetch("SELECT count(*) AS n FROM queen.queues WHERE name = ANY($1)", queues)
    assert rows[0]["n"] == 0, "none of the five queues was created"


async def test_payload_at_the_nesting_limit_round_trips(env: Env) -> None:
    """The deepest accepted payload can still be delivered (one level more is rejected above)."""
    queue = unique("deep")
    deepest = nested(200)
    await env.push([{"queue": queue, "payload": deepest}])
    popped = await env.pop(queue)
    assert popped is not None and popped["messages"][0]["data"] == deepest


# --- oversized bodies -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(pg_cluster: PgCluster) -> Iterator[tuple[ServerProcess, Sql]]:
    """A second server, on a database of its own, that accepts bodies of at most 64 KiB."""
    database = create_database(pg_cluster, "queen_small_body")
    env = server_env(pg_cluster, database, QUEEN_MAX_BODY_BYTES=str(SMALL_BODY_LIMIT))
    process = ServerProcess(env).start()
    try:
        connection = Sql(pg_cluster, database)
        try:
            yield process, connection
        finally:
            connection.close()
    finally:
        process.stop()


def push_body(queue: str, size: int) -> bytes:
    """A valid push body of exactly `size` bytes."""
    head = f'{{"items":[{{"queue":"{queue}","payload":"'.encode()
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def post_once(url: str, body: bytes | AsyncIterator[bytes]) -> httpx.Response:
    """One push on a connection of its own: a 413 closes the connection it answers on."""
    async with httpx.AsyncClient(base_url=url, timeout=30.0, verify=False) as client:
        return await client.post("/api/v1/push", content=body, headers=JSON_HEADERS)


async def chunked(body: bytes, piece: int = 8192) -> AsyncIterator[bytes]:
    """A body sent with Transfer-Encoding: chunked, so no Content-Length announces its size."""
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


async def test_oversized_body_is_413_json_and_stores_nothing(
    small_server: tuple[ServerProcess, Sql],
) -> None:
    server, sql = small_server
    queue = unique("big")
    before = sql.snapshot()
    for body in (
        push_body(queue, SMALL_BODY_LIMIT + 1),
        push_body(queue, 16 * SMALL_BODY_LIMIT),
        chunked(push_body(queue, SMALL_BODY_LIMIT + 1)),
        chunked(push_body(queue, 4 * SMALL_BODY_LIMIT)),
    ):
        response = await post_once(server.url, body)
        assert response.status_code == 413, response.text
        assert error_of(response) == "Request body too large"
    assert sql.snapshot() == before

    response = await post_once(server.url, push_body(queue, SMALL_BODY_LIMIT))
    assert response.status_code == 201, "a body of exactly the limit is accepted"
    assert response.json()[0]["status"] == "queued"


async def test_a_connection_that_got_413_still_serves_the_next_request(
    small_server: tuple[ServerProcess, Sql],
) -> None:
    server, _ = small_server
    for _ in range(3):
        async with httpx.AsyncClient(base_url=server.url, timeout=2.0, verify=False) as client:
            response = await client.post(
                "/api/v1/push", content=push_body(unique("big"), 4_000_000), headers=JSON_HEADERS
            )
            assert response.status_code == 413
            # The 413 closes its connection (its body was never read); the pool opens a new one.
            assert response.headers.get("connection") == "close"
            response = await client.get("/health")
            assert response.status_code == 200


# --- pops -----------------------------------------------------------------------------------------

POP_CASES: list[tuple[str, str, dict[str, str], str]] = [
    # (id, path below /api/v1/pop, query, the error names)
    ("batch-zero", "/queue/{q}", {"batch": "0"}, "batch"),
    ("batch-negative", "/queue/{q}", {"batch": "-5"}, "batch"),
    ("batch-huge", "/queue/{q}", {"batch": "100000000"}, "batch"),
    ("batch-beyond-int64", "/queue/{q}", {"batch": "9" * 30}, "batch"),
    ("timeout-negative", "/queue/{q}", {"wait": "true", "timeout": "-1"}, "timeout"),
    ("timeout-negative-no-wait", "/queue/{q}", {"timeout": "-1"}, "timeout"),
    ("partitions-zero", "/queue/{q}", {"partitions": "0"}, "partitions"),
    ("partitions-too-many", "/queue/{q}", {"partitions": "1001"}, "partitions"),
    ("group-too-long", "/queue/{q}", {"consumerGroup": "g" * LONG}, "consumerGroup"),
    ("group-nul", "/queue/{q}", {"consumerGroup": NUL}, "consumerGroup"),
    ("subscription-from-nul", "/queue/{q}", {"subscriptionFrom": NUL}, "subscriptionFrom"),
    ("queue-too-long", "/queue/" + "q" * LONG, {}, "queue"),
    ("queue-nul", "/queue/a%00b", {}, "queue"),
    ("partition-too-long", "/queue/{q}/partition/" + "p" * LONG, {}, "partition"),
    ("partition-batch-zero", "/queue/{q}/partition/Default", {"batch": "0"}, "batch"),
    ("namespace-batch-zero", "", {"namespace": "ns", "batch": "0"}, "batch"),
]


@pytest.mark.parametrize(
    ("path", "query", "names"),
    [pytest.param(path, query, names, id=case) for case, path, query, names in POP_CASES],
)
async def test_pop_rejects_bad_parameters_and_leases_nothing(
    env: Env, seed: Seed, path: str, query: dict[str, str], names: str
) -> None:
    path = "/api/v1/pop" + path.format(q=seed.pop_queue)
    await env.rejected("GET", path, params=query, says=names)


async def test_bad_pops_left_the_queue_untouched(env: Env, seed: Seed) -> None:
    popped = await env.pop(seed.pop_queue, batch=10)
    assert popped is not None and [m["data"] for m in popped["messages"]] == [0, 1]


async def test_pop_by_namespace_needs_a_namespace_or_a_task(env: Env) -> None:
    for query in ({}, {"namespace": "", "task": ""}, {"batch": "5"}):
        await env.rejected(
            "GET", "/api/v1/pop", params=query, exactly="namespace or task is required"
        )


async def test_pop_ignores_unknown_and_unparsable_parameters(env: Env) -> None:
    """The 2.6 client sends parameters this server does not know; they must not matter. Integers
    that do not parse fall back to their default (one message)."""
    queue = unique("extra")
    await env.push([{"queue": queue, "payload": n} for n in range(3)])
    popped = await env.pop(
        queue, autopilot="true", frames="true", batch="abc", wait="maybe", zzz=""
    )
    assert popped is not None and [m["data"] for m in popped["messages"]] == [0]
    response = await env.client.get(
        f"/api/v1/pop/queue/{queue}/partition/Default",
        params={"autopilot": "true", "frames": "true", "batch": "2x", "wait": "false"},
    )
    assert response.status_code == 204, "the partition is leased by the first pop"
    response = await env.client.get(
        f"/api/v1/pop/queue/{queue}", params={"frames": "1", "consumerGroup": "g", "batch": "5"}
    )
    assert response.status_code == 200 and len(response.json()["messages"]) == 3


# --- ack ------------------------------------------------------------------------------------------


def ack_of(message: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = {
        "transactionId": message["transactionId"],
        "partitionId": message["partitionId"],
        "leaseId": message["leaseId"],
        "status": "completed",
        "consumerGroup": None,
        "error": None,
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not ...}


ACK_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str, bool]] = [
    (
        "transactionId-missing",
        lambda m: ack_of(m, transactionId=...),
        "transactionId is required",
        True,
    ),
    (
        "transactionId-empty",
        lambda m: ack_of(m, transactionId=""),
        "transactionId is required",
        True,
    ),
    (
        "transactionId-number",
        lambda m: ack_of(m, transactionId=5),
        "transactionId is required",
        True,
    ),
    ("transactionId-nul", lambda m: ack_of(m, transactionId=f"x{NUL}"), "transactionId", False),
    (
        "partitionId-missing",
        lambda m: ack_of(m, partitionId=...),
        "partitionId is required to ensure message uniqueness",
        True,
    ),
    ("partitionId-null", lambda m: ack_of(m, partitionId=None), "partitionId is required", False),
    (
        "partitionId-not-uuid",
        lambda m: ack_of(m, partitionId="p-1"),
        "partitionId must be a UUID",
        True,
    ),
    ("leaseId-not-uuid", lambda m: ack_of(m, leaseId="lease-1"), "leaseId must be a UUID", True),
    ("leaseId-number", lambda m: ack_of(m, leaseId=5), "leaseId", False),
    ("group-number", lambda m: ack_of(m, consumerGroup=5), "consumerGroup", False),
    ("group-too-long", lambda m: ack_of(m, consumerGroup="g" * LONG), "consumerGroup", False),
    ("status-number", lambda m: ack_of(m, status=1), "status", False),
    ("error-nul", lambda m: ack_of(m, status="failed", error=f"boom{NUL}"), "error", False),
    ("body-array", lambda m: [ack_of(m)], "Request body must be a JSON object", True),
    ("body-string", lambda m: "ack", "Request body must be a JSON object", True),
    ("body-null", lambda m: b"null", "Request body must be a JSON object", True),
    ("json-malformed", lambda m: b'{"transactionId": "x", ', "Invalid JSON: ", False),
    ("json-bare-word", lambda m: b"ack please", "Invalid JSON: ", False),
]


@pytest.mark.parametrize(
    ("body", "message", "exact"),
    [pytest.param(body, message, exact, id=case) for case, body, message, exact in ACK_CASES],
)
async def test_ack_rejects_bad_input_and_changes_nothing(
    env: Env, seed: Seed, body: Callable[[dict[str, Any]], Any], message: str, exact: bool
) -> None:
    if exact:
        await env.rejected("POST", "/api/v1/ack", body(seed.leased), exactly=message)
    else:
        await env.rejected("POST", "/api/v1/ack", body(seed.leased), says=message)


async def ack_outcome(env: Env, body: dict[str, Any]) -> dict[str, Any]:
    """Ack that the API answers 200 with a per-item failure; asserts nothing was written."""
    before = env.snapshot()
    response = await env.client.post("/api/v1/ack", json=body)
    assert response.status_code == 200, response.text
    results = response.json()
    assert isinstance(results, list) and len(results) == 1
    result: dict[str, Any] = results[0]
    assert result["success"] is False and result["index"] == 0
    assert env.snapshot() == before
    return result


async def test_ack_of_an_unknown_message_is_a_per_item_failure(env: Env) -> None:
    leased = await env.leased_message()
    unknown_partition = ack_of(leased, partitionId=str(uuid.uuid4()), leaseId=None)
    result = await ack_outcome(env, unknown_partition)
    assert result["error"] == "Message not found"
    assert result["queueName"] is None and result["partitionName"] is None
    unknown_transaction = ack_of(leased, transactionId="no-such-message")
    result = await ack_outcome(env, unknown_transaction)
    assert result["error"] == "Message not found"
    assert result["queueName"] == leased["queue"]


async def test_ack_with_an_unknown_lease_is_refused_and_the_real_one_still_works(env: Env) -> None:
    leased = await env.leased_message()
    result = await ack_outcome(env, ack_of(leased, leaseId=str(uuid.uuid4())))
    assert result["error"] == "Invalid or expired lease"
    response = await env.client.post("/api/v1/ack", json=ack_of(leased))
    assert response.status_code == 200 and response.json()[0]["success"] is True


async def test_ack_of_an_already_acked_message_with_its_old_lease_fails_cleanly(
    env: Env,
) -> None:
    leased = await env.leased_message()
    first = await env.client.post("/api/v1/ack", json=ack_of(leased))
    assert first.status_code == 200 and first.json()[0]["leaseReleased"] is True
    for status in ("completed", "failed", "dlq", "retry"):
        result = await ack_outcome(env, ack_of(leased, status=status))
        assert result["error"] == "Invalid or expired lease"


async def test_ack_with_an_unknown_status_is_a_per_item_failure(env: Env) -> None:
    """Spec §4.4: an unknown status is a business failure inside the 200 answer. (Outside a
    transaction its `error` is null, as in the original; see the report of this module.)"""
    leased = await env.leased_message()
    await ack_outcome(env, ack_of(leased, status="bogus"))
    response = await env.client.post("/api/v1/ack", json=ack_of(leased))
    assert response.json()[0]["success"] is True


# --- ack batch ------------------------------------------------------------------------------------

TX_MESSAGE = "Each acknowledgment must have a valid transactionId string"
PID_MESSAGE = (
    "Each acknowledgment must have a valid partitionId string to ensure message uniqueness"
)
ACK_BATCH_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str, bool]] = [
    ("missing", lambda m: {}, "acknowledgments array is required", True),
    ("null", lambda m: {"acknowledgments": None}, "acknowledgments array is required", True),
    ("object", lambda m: {"acknowledgments": ack_of(m)}, "acknowledgments array is required", True),
    ("string", lambda m: {"acknowledgments": "all"}, "acknowledgments array is required", True),
    ("body-array", lambda m: [ack_of(m)], "acknowledgments array is required", True),
    (
        "item-no-txid",
        lambda m: {"acknowledgments": [ack_of(m), ack_of(m, transactionId=...)]},
        TX_MESSAGE,
        True,
    ),
    (
        "item-number-txid",
        lambda m: {"acknowledgments": [ack_of(m), ack_of(m, transactionId=7)]},
        TX_MESSAGE,
        True,
    ),
    ("item-not-object", lambda m: {"acknowledgments": [ack_of(m), "x"]}, TX_MESSAGE, True),
    (
        "item-no-pid",
        lambda m: {"acknowledgments": [ack_of(m), ack_of(m, partitionId=...)]},
        PID_MESSAGE,
        True,
    ),
    (
        "item-pid-not-uuid",
        lambda m: {"acknowledgments": [ack_of(m), ack_of(m, partitionId="p")]},
        "partitionId must be a UUID",
        True,
    ),
    (
        "item-lease-not-uuid",
        lambda m: {"acknowledgments": [ack_of(m, leaseId="l")]},
        "leaseId must be a UUID",
        True,
    ),
    (
        "group-number",
        lambda m: {"acknowledgments": [ack_of(m)], "consumerGroup": 3},
        "consumerGroup",
        False,
    ),
    ("json-malformed", lambda m: b'{"acknowledgments": [}', "Invalid JSON: ", False),
]


@pytest.mark.parametrize(
    ("body", "message", "exact"),
    [pytest.param(body, message, exact, id=case) for case, body, message, exact in ACK_BATCH_CASES],
)
async def test_ack_batch_rejects_bad_input_and_applies_no_item(
    env: Env, seed: Seed, body: Callable[[dict[str, Any]], Any], message: str, exact: bool
) -> None:
    """Most cases carry a valid ack of a leased message first: it must not be applied either."""
    leased = seed.leased
    if exact:
        await env.rejected("POST", "/api/v1/ack/batch", body(leased), exactly=message)
    else:
        await env.rejected("POST", "/api/v1/ack/batch", body(leased), says=message)


async def test_ack_batch_of_no_acknowledgments_answers_an_empty_array(env: Env) -> None:
    before = env.snapshot()
    response = await env.client.post("/api/v1/ack/batch", json={"acknowledgments": []})
    assert (response.status_code, response.json()) == (200, [])
    assert env.snapshot() == before


# --- transaction ----------------------------------------------------------------------------------


def tx_push(queue: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "push", "items": [{"queue": queue, "payload": {"tx": True}, **fields}]}


def tx_ack(message: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"type": "ack", **ack_of(message, **changes)}


TX_CASES: list[tuple[str, Callable[[str, dict[str, Any]], Any], str, bool]] = [
    ("operations-missing", lambda q, m: {}, "operations array required", True),
    ("operations-null", lambda q, m: {"operations": None}, "operations array required", True),
    (
        "operations-object",
        lambda q, m: {"operations": tx_push(q)},
        "operations array required",
        True,
    ),
    ("body-array", lambda q, m: [tx_push(q)], "operations array required", True),
    ("operations-empty", lambda q, m: {"operations": []}, "operations array cannot be empty", True),
    ("op-not-object", lambda q, m: {"operations": [tx_push(q), 1]}, "operation", False),
    (
        "op-unknown-type",
        lambda q, m: {"operations": [tx_push(q), {"type": "frobnicate"}]},
        "Unknown operation type: frobnicate",
        True,
    ),
    (
        "op-no-type",
        lambda q, m: {"operations": [tx_push(q), {"items": []}]},
        "Unknown operation type",
        False,
    ),
    ("push-no-items", lambda q, m: {"operations": [{"type": "push"}]}, "items", False),
    (
        "push-empty-items",
        lambda q, m: {"operations": [{"type": "push", "items": []}]},
        "items",
        False,
    ),
    (
        "push-bad-queue",
        lambda q, m: {"operations": [tx_push(q), tx_push(5)]},
        "Queue must be a string",
        True,
    ),
    (
        "push-bad-trace",
        lambda q, m: {"operations": [tx_push(q), tx_push(q, traceId="t")]},
        "TraceId must be a valid UUID",
        True,
    ),
    ("push-payload-nul", lambda q, m: {"operations": [tx_push(q, payload=NUL)]}, "NUL", False),
    (
        "push-payload-too-deep",
        lambda q, m: {"operations": [tx_push(q, payload=nested(300))]},
        "nesting",
        False,
    ),
    (
        "ack-pid-not-uuid",
        lambda q, m: {"operations": [tx_push(q), tx_ack(m, partitionId="p")]},
        "partitionId must be a UUID",
        True,
    ),
    (
        "ack-no-txid",
        lambda q, m: {"operations": [tx_push(q), tx_ack(m, transactionId=...)]},
        "transactionId is required",
        True,
    ),
    (
        "ack-lease-not-uuid",
        lambda q, m: {"operations": [tx_ack(m, leaseId="x"), tx_push(q)]},
        "leaseId must be a UUID",
        True,
    ),
    ("json-malformed", lambda q, m: b'{"operations": [{"type": "push"', "Invalid JSON: ", False),
]


@pytest.mark.parametrize(
    ("body", "message", "exact"),
    [pytest.param(body, message, exact, id=case) for case, body, message, exact in TX_CASES],
)
async def test_transaction_rejects_bad_input_and_applies_no_operation(
    env: Env, seed: Seed, body: Callable[[str, dict[str, Any]], Any], message: str, exact: bool
) -> None:
    payload = body(unique("tx"), seed.leased)
    if exact:
        await env.rejected("POST", "/api/v1/transaction", payload, exactly=message)
    else:
        await env.rejected("POST", "/api/v1/transaction", payload, says=message)


async def test_transaction_whose_ack_fails_keeps_none_of_its_pushes(env: Env) -> None:
    leased = await env.leased_message()
    queue = unique("tx")
    unknown = tx_ack(leased, transactionId="no-such-message", leaseId=None)
    for operations, reason in (
        ([tx_push(queue), unknown], "Message not found"),
        ([tx_push(queue), tx_ack(leased), tx_push(queue + "-b"), unknown], "Message not found"),
        ([tx_push(queue), tx_ack(leased, leaseId=str(uuid.uuid4()))], "Invalid or expired lease"),
        ([tx_push(queue), tx_ack(leased, status="bogus")], "Unknown error"),
    ):
        before = env.snapshot()
        response = await env.client.post("/api/v1/transaction", json={"operations": operations})
        assert response.status_code == 200, response.text
        outcome = response.json()
        assert outcome["success"] is False, outcome
        assert outcome["error"] == f"ACK operation failed: {reason}"
        failing = outcome["results"][-1]
        assert failing["success"] is False and failing["index"] == len(operations) - 1
        assert env.snapshot() == before, "all or nothing: the push and the good ack were undone"
    response = await env.client.post("/api/v1/ack", json=ack_of(leased))
    assert response.json()[0]["success"] is True, "the real lease survived the failed transactions"


# --- lease extension ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"seconds": "x"}, "seconds", id="seconds-string"),
        pytest.param({"seconds": 1.5}, "seconds", id="seconds-float"),
        pytest.param({"seconds": 0}, "seconds", id="seconds-zero"),
        pytest.param({"seconds": -30}, "seconds", id="seconds-negative"),
        pytest.param({"seconds": True}, "seconds", id="seconds-bool"),
        pytest.param({"seconds": 86_401}, "seconds", id="seconds-too-many"),
        pytest.param({"seconds": 10**30}, "seconds", id="seconds-huge"),
        pytest.param([60], "Request body must be a JSON object", id="body-array"),
        pytest.param(b"60", "Request body must be a JSON object", id="body-number"),
        pytest.param(b"{seconds: 60}", "Invalid JSON: ", id="json-malformed"),
    ],
)
async def test_lease_extend_rejects_bad_input_and_extends_nothing(
    env: Env, seed: Seed, body: Any, message: str
) -> None:
    path = f"/api/v1/lease/{seed.leased['leaseId']}/extend"
    await env.rejected("POST", path, body, says=message)


async def test_the_shared_lease_survived_every_rejected_request(env: Env, seed: Seed) -> None:
    """Rejected acks, ack batches, transactions and extensions all named this lease."""
    response = await env.client.post("/api/v1/ack", json=ack_of(seed.leased))
    assert response.status_code == 200, response.text
    result = response.json()[0]
    assert result["success"] is True and result["leaseReleased"] is True
    popped = await env.pop(seed.leased["queue"], batch=10)
    assert popped is not None, "the cursor moved exactly once: the second message is next"
    assert [m["data"] for m in popped["messages"]] == [1]


async def test_lease_extend_needs_a_uuid(env: Env) -> None:
    for lease in ("not-a-uuid", "1234", "x" * 300):
        await env.rejected(
            "POST", f"/api/v1/lease/{lease}/extend", exactly="leaseId must be a UUID"
        )


async def test_lease_extend_of_an_unknown_lease_reports_failure(env: Env) -> None:
    lease = str(uuid.uuid4())
    before = env.snapshot()
    response = await env.client.post(f"/api/v1/lease/{lease}/extend", json={"seconds": 30})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["success"] is False and result["leaseId"] == lease
    assert result["error"] == "Lease not found" and result["newExpiresAt"] is None
    assert env.snapshot() == before


async def test_lease_extend_without_a_body_works(env: Env) -> None:
    """The Python client sends no body at all; the JS client sends `{}`. A body needs a JSON
    content type (the access gate refuses others, issue 14), even a blank one."""
    leased = await env.leased_message()
    path = f"/api/v1/lease/{leased['leaseId']}/extend"
    blank = {"content": b"   ", "headers": {"content-type": "application/json"}}
    bodies: list[dict[str, Any]] = [{}, {"json": {}}, blank]
    for kwargs in bodies:
        response = await env.client.post(path, **kwargs)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["success"] is True and result["error"] is None, result
        assert isinstance(result["newExpiresAt"], str) and result["newExpiresAt"].endswith("Z")


# --- configure ------------------------------------------------------------------------------------

CONFIGURE_CASES: list[tuple[str, Callable[[str], Any], str, bool]] = [
    ("queue-missing", lambda q: {"options": {"leaseTime": 5}}, "queue is required", True),
    ("queue-number", lambda q: {"queue": 5}, "queue is required", True),
    ("queue-null", lambda q: {"queue": None}, "queue is required", True),
    ("body-array", lambda q: [{"queue": q}], "queue is required", True),
    ("body-string", lambda q: q, "queue is required", True),
    ("queue-empty", lambda q: {"queue": ""}, "queue", False),
    ("queue-too-long", lambda q: {"queue": "q" * LONG}, "queue", False),
    ("queue-nul", lambda q: {"queue": q + NUL}, "queue", False),
    ("namespace-number", lambda q: {"queue": q, "namespace": 5}, "namespace", False),
    ("namespace-too-long", lambda q: {"queue": q, "namespace": "n" * LONG}, "namespace", False),
    ("task-too-long", lambda q: {"queue": q, "task": "t" * LONG}, "task", False),
    ("task-nul", lambda q: {"queue": q, "task": NUL}, "task", False),
    ("options-string", lambda q: {"queue": q, "options": "x"}, "options must be an object", True),
    ("options-array", lambda q: {"queue": q, "options": []}, "options must be an object", True),
    (
        "leaseTime-string",
        lambda q: {"queue": q, "options": {"leaseTime": "x"}},
        "options.leaseTime",
        False,
    ),
    (
        "leaseTime-float",
        lambda q: {"queue": q, "options": {"leaseTime": 1.5}},
        "options.leaseTime",
        False,
    ),
    (
        "leaseTime-bool",
        lambda q: {"queue": q, "options": {"leaseTime": True}},
        "options.leaseTime",
        False,
    ),
    (
        "retryLimit-negative",
        lambda q: {"queue": q, "options": {"retryLimit": -1}},
        "options.retryLimit",
        False,
    ),
    ("ttl-beyond-int32", lambda q: {"queue": q, "options": {"ttl": 2**31}}, "options.ttl", False),
    (
        "encryption-string",
        lambda q: {"queue": q, "options": {"encryptionEnabled": "yes"}},
        "options.encryptionEnabled",
        False,
    ),
    (
        "dlq-number",
        lambda q: {"queue": q, "options": {"deadLetterQueue": 1}},
        "options.deadLetterQueue",
        False,
    ),
    ("json-malformed", lambda q: b'{"queue": ', "Invalid JSON: ", False),
]


@pytest.mark.parametrize(
    ("body", "message", "exact"),
    [pytest.param(body, message, exact, id=case) for case, body, message, exact in CONFIGURE_CASES],
)
async def test_configure_rejects_bad_input_and_leaves_the_queue_as_it_was(
    env: Env, seed: Seed, body: Callable[[str], Any], message: str, exact: bool
) -> None:
    queue = seed.configured
    if exact:
        await env.rejected("POST", "/api/v1/configure", body(queue), exactly=message)
    else:
        await env.rejected("POST", "/api/v1/configure", body(queue), says=message)


async def test_configure_with_a_bad_option_creates_no_queue(env: Env) -> None:
    queue = unique("cfg-new")
    for options in ({"leaseTime": "x"}, {"retryLimit": -1}, {"encryptionEnabled": "yes"}):
        await env.rejected(
            "POST", "/api/v1/configure", {"queue": queue, "options": options}, says="options."
        )
    rows = env.sql.fetch("SELECT count(*) AS n FROM queen.queues WHERE name = $1", queue)
    assert rows[0]["n"] == 0


# --- any route ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/nope"),
        ("POST", "/api/v1/nope"),
        ("GET", "/api/nope"),  # other paths are the dashboard's client-side routes
        ("GET", "/api/v1/pop/queue/"),
        ("POST", "/api/v1/lease//extend"),
        ("POST", "/api/v1/push/extra"),
    ],
)
async def test_unknown_paths_are_404_json(env: Env, method: str, path: str) -> None:
    await env.rejected(method, path, status=404, exactly="Not found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/push"),
        ("PUT", "/api/v1/push"),
        ("DELETE", "/api/v1/ack"),
        ("GET", "/api/v1/ack/batch"),
        ("PUT", "/api/v1/configure"),
        ("GET", "/api/v1/transaction"),
        ("POST", "/api/v1/pop/queue/q"),
        ("DELETE", "/api/v1/pop"),
    ],
)
async def test_wrong_methods_are_405_json(env: Env, method: str, path: str) -> None:
    await env.rejected(method, path, status=405, exactly="Method not allowed")


# --- fuzzing --------------------------------------------------------------------------------------


def assert_not_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.content[:500], response.text)
    if response.status_code >= 400:
        error_of(response)


FUZZ = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
names = st.text(max_size=12) | st.sampled_from(["fuzz-a", "fuzz-b", "", "q" * LONG])
uuids = st.uuids().map(str)
maybe = st.one_of
push_items = st.fixed_dictionaries(
    {"queue": maybe(names, json_values)},
    optional={
        "partition": maybe(names, json_values),
        "payload": json_values,
        "transactionId": maybe(names, json_values),
        "traceId": maybe(uuids, names, json_values),
    },
)
push_bodies = maybe(
    st.fixed_dictionaries({"items": st.lists(maybe(push_items, json_values), max_size=4)}),
    json_values,
)
acks = st.fixed_dictionaries(
    {},
    optional={
        "transactionId": maybe(names, json_values),
        "partitionId": maybe(uuids, names, json_values),
        "leaseId": maybe(uuids, names, json_values),
        "status": maybe(
            st.sampled_from(["completed", "success", "failed", "dlq", "retry"]), json_values
        ),
        "consumerGroup": maybe(names, json_values),
        "error": json_values,
    },
)
operations = maybe(
    st.fixed_dictionaries(
        {"type": st.just("push"), "items": st.lists(maybe(push_items, json_values), max_size=3)}
    ),
    acks.map(lambda ack: {"type": "ack", **ack}),
    st.fixed_dictionaries({"type": json_values}),
    json_values,
)


@FUZZ
@given(body=push_bodies)
def test_fuzz_push_never_5xx(sync_client: httpx.Client, body: Any) -> None:
    assert_not_5xx(sync_client.post("/api/v1/push", json=body))


@FUZZ
@given(body=maybe(acks, json_values), batch=st.booleans())
def test_fuzz_ack_never_5xx(sync_client: httpx.Client, body: Any, batch: bool) -> None:
    if batch:
        batch_body = {"acknowledgments": [body], "consumerGroup": None}
        assert_not_5xx(sync_client.post("/api/v1/ack/batch", json=batch_body))
    else:
        assert_not_5xx(sync_client.post("/api/v1/ack", json=body))


@FUZZ
@given(
    body=maybe(st.fixed_dictionaries({"operations": st.lists(operations, max_size=3)}), json_values)
)
def test_fuzz_transaction_never_5xx(sync_client: httpx.Client, body: Any) -> None:
    assert_not_5xx(sync_client.post("/api/v1/transaction", json=body))


@FUZZ
@given(
    route=st.sampled_from(
        [
            "/api/v1/push",
            "/api/v1/ack",
            "/api/v1/ack/batch",
            "/api/v1/transaction",
            "/api/v1/configure",
            f"/api/v1/lease/{uuid.uuid4()}/extend",
        ]
    ),
    raw=st.binary(max_size=64) | st.text(max_size=64).map(str.encode),
)
def test_fuzz_raw_bodies_never_5xx(sync_client: httpx.Client, route: str, raw: bytes) -> None:
    response = sync_client.post(route, content=raw, headers={"content-type": "application/json"})
    assert_not_5xx(response)


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(
            [
                "batch",
                "wait",
                "timeout",
                "consumerGroup",
                "autoAck",
                "subscriptionMode",
                "subscriptionFrom",
                "partitions",
                "namespace",
                "task",
                "frames",
            ]
        ),
        st.text(max_size=12) | st.integers(min_value=-(10**12), max_value=10**12).map(str),
    ),
    queue=st.sampled_from(["fuzz-a", "fuzz-b"]),
)
def test_fuzz_pop_parameters_never_5xx(
    sync_client: httpx.Client, query: dict[str, str], queue: str
) -> None:
    query = {**query, "wait": "false"}  # never park: the fuzz stays fast
    assert_not_5xx(sync_client.get(f"/api/v1/pop/queue/{queue}", params=query))
    assert_not_5xx(sync_client.get("/api/v1/pop", params=query))


# --- afterwards -----------------------------------------------------------------------------------


async def test_server_survived_the_barrage(env: Env, server: ServerProcess) -> None:
    """Runs last: the worker is alive, healthy, still serves a full round trip, and none of the
    requests above ended as an unhandled error (a 500) in its log."""
    assert server.process is not None and server.process.poll() is None
    response = await env.client.get("/health")
    assert response.status_code == 200, response.text
    queue = unique("after")
    pushed = await env.push([{"queue": queue, "payload": {"ok": True}}])
    assert pushed[0]["status"] == "queued"
    popped = await env.pop(queue)
    assert popped is not None and popped["messages"][0]["data"] == {"ok": True}
    response = await env.client.post("/api/v1/ack", json=ack_of(popped["messages"][0]))
    assert response.status_code == 200 and response.json()[0]["success"] is True
    log = server.log_path.read_text(errors="replace")
    assert "unhandled error" not in log, log[-4000:]
