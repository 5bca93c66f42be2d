"""The worker's HTTP server end to end (queen/http/serving.py): plain keep-alive requests on the
fast loop, and every request it declines served by hypercorn on the same connection, at any point
of it, with nothing lost, answered twice or left hanging."""

from __future__ import annotations

import json
import signal
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.http_reader import Client
from tests.integration.api import unique
from tests.support import SLOW_RECHECK, ServerProcess, running_server

TIMEOUT = 20


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, **SLOW_RECHECK) as process:
        yield process


@asynccontextmanager
async def connected(server: ServerProcess) -> AsyncIterator[Client]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            yield Client(stream)


def push(queue: str, payload: object, partition: str = "Default") -> bytes:
    body = json.dumps({"items": [{"queue": queue, "partition": partition, "payload": payload}]})
    return (
        b"POST /api/v1/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
    )


def chunked_push(queue: str, payload: object) -> bytes:
    body = json.dumps({"items": [{"queue": queue, "payload": payload}]}).encode()
    return (
        b"POST /api/v1/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )


def pop(queue: str, batch: int = 10) -> bytes:
    return b"GET /api/v1/pop/queue/%s?batch=%d&wait=false HTTP/1.1\r\nHost: t\r\n\r\n" % (
        queue.encode(),
        batch,
    )


def payloads(body: bytes) -> list[object]:
    return [message["data"] for message in json.loads(body)["messages"]]


async def test_one_connection_carries_many_requests_and_pipelined_ones_in_order(
    server: ServerProcess,
) -> None:
    queue = unique("fast")
    async with connected(server) as client:
        for n in range(20):
            await client.send(push(queue, n))
            assert (await client.answer())[0] == 201
        await client.send(push(queue, 20) + push(queue, 21) + pop(queue, 100))
        assert [(await client.answer())[0] for _ in range(2)] == [201, 201]
        status, _, body = await client.answer()
        assert status == 200 and payloads(body) == list(range(22))


@pytest.mark.parametrize("first_plain", [False, True])
async def test_a_chunked_push_hands_the_connection_to_hypercorn_and_it_serves_on(
    server: ServerProcess, first_plain: bool
) -> None:
    queue = unique("handover")
    async with connected(server) as client:
        sent = []
        if first_plain:
            await client.send(push(queue, "plain-before"))
            assert (await client.answer())[0] == 201
            sent.append("plain-before")
        await client.send(chunked_push(queue, "chunked"))
        assert (await client.answer())[0] == 201
        await client.send(push(queue, "plain-after"))
        assert (await client.answer())[0] == 201
        await client.send(pop(queue))
        status, _, body = await client.answer()
    assert status == 200 and payloads(body) == [*sent, "chunked", "plain-after"]


async def test_expect_100_continue_is_honoured(server: ServerProcess) -> None:
    queue = unique("expect")
    body = json.dumps({"items": [{"queue": queue, "payload": 1}]}).encode()
    async with connected(server) as client:
        await client.send(
            b"POST /api/v1/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert (await client.answer())[0] == 100
        await client.send(body)
        assert (await client.answer())[0] == 201


async def test_http_1_0_and_head_are_answered_by_hypercorn(server: ServerProcess) -> None:
    async with connected(server) as client:
        await client.send(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = await client.answer(head=True)
        assert status == 200 and body == b"" and int(headers[b"content-length"]) > 0
    async with connected(server) as client:
        await client.send(b"GET /health HTTP/1.0\r\n\r\n")
        status, headers, body = await client.answer()
        assert status == 200 and headers[b"connection"] == b"close" and b'"status"' in body


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET /health HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
        b"POST /api/v1/push HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST /api/v1/push HTTP/1.1\r\nHost: t\r\nContent-Length: " + b"0" * 5000 + b"1\r\n\r\n",
    ],
)
async def test_a_malformed_head_is_refused_and_the_worker_serves_on(
    server: ServerProcess, garbage: bytes
) -> None:
    async with connected(server) as client:
        try:
            # The server may refuse and close while a long head is still being sent (the
            # send then breaks): closing without an answer is a refusal too.
            await client.send(garbage)
            status = (await client.answer())[0]
        except (EOFError, trio.BrokenResourceError):
            status = 0
        assert status in (0, 400, 413, 431)
    async with connected(server) as client:
        await client.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await client.answer())[0] == 200


async def test_a_client_resetting_a_parked_pop_is_no_error(server: ServerProcess) -> None:
    before = server.log_path.read_text(errors="replace").count("error while serving")
    async with connected(server) as client:
        await client.send(
            b"GET /api/v1/pop/queue/%s?wait=true&timeout=30000 HTTP/1.1\r\nHost: t\r\n\r\n"
            % unique("reset").encode()
        )
        await parked_pops_reach(server, 1)
        client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.stream.socket.close()
    await parked_pops_reach(server, 0, at_most=True)
    async with connected(server) as client:
        await client.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await client.answer())[0] == 200
    assert server.log_path.read_text(errors="replace").count("error while serving") == before


async def test_a_client_leaving_mid_body_pushes_nothing(server: ServerProcess) -> None:
    queue = unique("leaving")
    whole = push(queue, "never")
    async with connected(server) as client:
        await client.send(whole[:-5])
    async with connected(server) as client:
        await client.send(pop(queue))
        assert (await client.answer())[0] == 204


async def parked_pops_reach(server: ServerProcess, count: int, at_most: bool = False) -> None:
    """Until the workers hold at least (or, `at_most`, at most) `count` parked long-polls."""
    while True:
        async with connected(server) as client:
            await client.send(b"GET /metrics/prometheus HTTP/1.1\r\nHost: t\r\n\r\n")
            metrics = (await client.answer())[2].decode()
        parked = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("queen_queue_backoff_groups")
        )
        if (parked <= count) if at_most else (parked >= count):
            return
        await trio.sleep(0.05)


async def test_shutdown_closes_idle_connections_and_answers_parked_pops(
    pg_cluster: PgCluster, database: str
) -> None:
    with running_server(pg_cluster, database, **SLOW_RECHECK) as process:
        async with connected(process) as idle, connected(process) as parked:
            await idle.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await idle.answer())[0] == 200
            await parked.send(
                b"GET /api/v1/pop/queue/%s?wait=true&timeout=30000 HTTP/1.1\r\nHost: t\r\n\r\n"
                % unique("parked").encode()
            )
            await parked_pops_reach(process, 1)
            process.signal(signal.SIGTERM)
            assert await idle.closed()
            status, headers, _ = await parked.answer()
            assert status == 204 and headers.get(b"connection") == b"close"
            assert await parked.closed()
