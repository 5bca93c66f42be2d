"""The lean path (queen/http/lean.py) answers push, pop and ack exactly as quart does.

quart still serves the same handlers under another spelling of their paths (a trailing slash), so
each request here is sent both ways and the two answers must match byte for byte, but for the
`date` header and the ids and times a fresh request draws.
"""

from __future__ import annotations

import http.client
import re
import socket
from collections.abc import Iterator

import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import SLOW_RECHECK, ServerProcess, run_sql, running_server

MAX_BODY = 65_536
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(rb'"createdAt":"[^"]*"')

Answer = tuple[int, list[tuple[str, str]], bytes]


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(
        pg_cluster, database, QUEEN_MAX_BODY_BYTES=str(MAX_BODY), **SLOW_RECHECK
    ) as process:
        yield process


def _address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


VARYING_HEADERS = frozenset(("date", "x-request-id"))


def exchange(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request on a fresh connection: status, headers in wire order (but `date` and the
    request id, which differ per request), body."""
    connection = http.client.HTTPConnection(*_address(server), timeout=10)
    try:
        connection.request(
            method,
            path,
            body=body,
            headers=headers if headers is not None else _typed(body),
            encode_chunked=not isinstance(body, bytes | None),
        )
        response = connection.getresponse()
        data = response.read()
        kept = [(name.lower(), value) for name, value in response.getheaders()]
        return response.status, [(n, v) for n, v in kept if n not in VARYING_HEADERS], data
    finally:
        connection.close()


def _typed(body: bytes | Iterator[bytes] | None) -> dict[str, str]:
    """A body goes out as JSON, as the clients send it (the access gate refuses untyped ones)."""
    return {} if body is None else {"Content-Type": "application/json"}


def via_quart(path: str) -> str:
    """The same route under the spelling only quart matches."""
    route, mark, query = path.partition("?")
    return f"{route}/{mark}{query}"


def masked(answer: Answer) -> Answer:
    status, headers, body = answer
    return status, headers, TIMESTAMP.sub(b"T", UUID.sub(b"ID", body))


def assert_same(server: ServerProcess, method: str, path: str, body: bytes | None) -> Answer:
    lean = masked(exchange(server, method, path, body))
    served_by_quart = masked(exchange(server, method, via_quart(path), body))
    assert lean == served_by_quart
    assert ("access-control-allow-origin", "*") in lean[1]
    return lean


ACK = b'{"transactionId": "t1", "partitionId": "00000000-0000-0000-0000-000000000001"}'


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/v1/push", b'{"items": [{"queue": "lean-q", "payload": {"a": 1}}]}', 201),
        ("POST", "/api/v1/push", b'{"items": []}', 201),
        ("POST", "/api/v1/push", b"{x}", 400),
        ("POST", "/api/v1/push", b"[]", 400),
        ("POST", "/api/v1/push", None, 400),
        ("POST", "/api/v1/push", b'{"items": [{"queue": "", "payload": 1}]}', 400),
        ("POST", "/api/v1/ack", b"[1]", 400),
        ("POST", "/api/v1/ack", b"{}", 400),
        ("POST", "/api/v1/ack", ACK, 200),
        ("POST", "/api/v1/ack/batch", b'{"acknowledgments": []}', 200),
        ("POST", "/api/v1/ack/batch", b'{"acknowledgments": 5}', 400),
        ("GET", "/api/v1/pop/queue/lean-empty", None, 204),
        ("GET", "/api/v1/pop/queue/lean-empty?batch=0", None, 400),
        ("GET", "/api/v1/pop/queue/lean-empty?batch=2&batch=0", None, 204),
        ("GET", "/api/v1/pop/queue/lean-empty/partition/p1?timeout=-1", None, 400),
        ("GET", "/api/v1/pop/queue/bad%00name", None, 400),
        ("GET", "/api/v1/pop", None, 400),
        ("GET", "/api/v1/pop?namespace=lean-nowhere&wait=false", None, 204),
    ],
)
def test_a_hot_route_answers_as_quart_does(
    server: ServerProcess, method: str, path: str, body: bytes | None, status: int
) -> None:
    assert assert_same(server, method, path, body)[0] == status


def test_a_popped_message_reads_the_same_on_both_paths(server: ServerProcess) -> None:
    queue = unique("lean")
    for partition in ("a", "b"):
        push = f'{{"items": [{{"queue": "{queue}", "partition": "{partition}", "payload": 7}}]}}'
        assert exchange(server, "POST", "/api/v1/push", push.encode())[0] == 201
    lean = masked(exchange(server, "GET", f"/api/v1/pop/queue/{queue}/partition/a"))
    by_quart = masked(exchange(server, "GET", f"/api/v1/pop/queue/{queue}/partition/b/"))
    assert lean[0] == by_quart[0] == 200
    assert lean[1] == by_quart[1]
    assert lean[2].replace(b'"a"', b'"b"') == by_quart[2]


def test_an_oversized_body_is_413_and_the_connection_closes(server: ServerProcess) -> None:
    too_large = b'{"items": [' + b" " * MAX_BODY + b"]}"
    announced = exchange(server, "POST", "/api/v1/push", too_large)
    chunked = exchange(server, "POST", "/api/v1/push", iter([too_large[:1000], too_large[1000:]]))
    by_quart = exchange(server, "POST", "/api/v1/push/", iter([too_large]))
    for status, headers, body in (announced, chunked, by_quart):
        assert status == 413
        assert body == b'{"error":"Request body too large"}'
        assert ("connection", "close") in headers
    assert announced[1] == chunked[1] == by_quart[1]


def test_a_chunked_push_is_stored(server: ServerProcess) -> None:
    queue = unique("lean")
    parts = [b'{"items": [{"queue": "', queue.encode(), b'", "payload": {"chunked": true}}]}']
    status, _, body = exchange(server, "POST", "/api/v1/push", iter(parts))
    assert status == 201 and b'"queued"' in body
    status, _, body = exchange(server, "GET", f"/api/v1/pop/queue/{queue}")
    assert status == 200 and b'{"chunked":true}' in body


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        ("GET", "/api/v1/push", 405, ("allow", "POST")),
        ("PUT", "/api/v1/ack", 405, ("allow", "POST")),
        ("POST", "/api/v1/pop/queue/q", 405, ("allow", "GET, HEAD")),
        ("OPTIONS", "/api/v1/push", 204, ("access-control-max-age", "86400")),
        ("HEAD", "/api/v1/pop/queue/lean-empty", 204, ("content-length", "0")),
    ],
)
def test_other_methods_on_hot_paths_keep_quarts_answers(
    server: ServerProcess, method: str, path: str, status: int, expected: tuple[str, str]
) -> None:
    answer = exchange(server, method, path)
    assert answer[0] == status
    assert expected in answer[1]
    assert ("access-control-allow-methods", "GET, POST, PUT, DELETE, OPTIONS") in answer[1]


def test_a_client_leaving_mid_body_gets_nothing_and_the_worker_serves_on(
    server: ServerProcess,
) -> None:
    with socket.create_connection(_address(server), timeout=5) as client:
        client.sendall(
            b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n{"
        )
    for _ in range(4):  # both workers, whichever took the dropped connection
        assert exchange(server, "POST", "/api/v1/push", b'{"items": []}')[0] == 201


async def test_a_parked_pop_on_a_partition_is_freed_when_its_client_leaves(
    server: ServerProcess,
) -> None:
    queue = unique("lean")
    async with Api(server.url) as api:
        path = f"/api/v1/pop/queue/{queue}/partition/p?wait=true&timeout=20000"
        client = await trio.open_tcp_stream(*_address(server))
        await client.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await api.wait_parked(1)
        await client.aclose()
        await wait_until_unparked(api)
        status, _ = await api.request(
            "POST", "/api/v1/push", json={"items": [{"queue": queue, "partition": "p"}]}
        )
        assert status == 201
        with trio.fail_after(10):
            popped = await api.pop(queue, wait=True, timeout=5000)
        assert popped is not None, "the message was leased to the client that left"


async def test_a_pop_that_does_not_wait_gives_its_messages_back_when_its_client_has_left(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """No task watches a non-waiting pop's connection: the pop asks whether its client is still
    there once it has leased the messages, and gives them back at once when it is not."""
    queue = unique("lean")
    async with Api(server.url) as api:
        await api.push(queue, ["kept"], partition="p")
        with socket.create_connection(_address(server), timeout=5) as client:
            client.sendall(f"GET /api/v1/pop/queue/{queue} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            client.shutdown(socket.SHUT_WR)
            assert client.recv(1024) == b"", "answered a client that had left"
        given_back = (
            "SELECT 1 FROM queen.partition_consumers c"
            " JOIN queen.partitions p ON p.id = c.partition_id"
            " JOIN queen.queues q ON q.id = p.queue_id"
            " WHERE q.name = $1 AND c.lease_expires_at IS NULL"
        )
        with trio.fail_after(10):  # the row appears with the pop's lease, which then goes
            while True:
                if run_sql(pg_cluster, given_back, queue, database=database):
                    break
                await trio.sleep(0.02)
        popped = await api.pop(queue)
        assert popped is not None and [m["data"] for m in popped["messages"]] == ["kept"]


async def wait_until_unparked(api: Api) -> None:
    with trio.fail_after(10):
        while True:
            _, metrics = await api.request("GET", "/metrics")
            if metrics["longPolls"]["parked"] == 0:
                return
            await trio.sleep(0.02)
