"""The fast HTTP/1.1 loop over a real socket pair, with small ASGI apps standing for queen's: the
framing of answers, keep-alive and pipelining, disconnects, failures and shutdown. (The loop in
front of the real server, handover to hypercorn included: tests/integration/test_fast_http.py.)"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from queen.http.h1_connection import (
    BUFFERED_BODY,
    CLIENT_LEFT,
    H1Connection,
    Message,
    ServerState,
)
from tests.http_reader import Client

Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

TIMEOUT = 10


async def echo(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Answers with the method, path, query and body it was given."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = b"%s %s ?%s %s" % (
        scope["method"].encode(),
        scope["path"].encode(),
        scope["query_string"],
        body,
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": text})


class Outcome:
    """What the connection's `run` returned (None, or the bytes handed over), once it ended."""

    def __init__(self) -> None:
        self.ended = trio.Event()
        self.value: bytes | None = None


@asynccontextmanager
async def connection(
    app: App, keep_alive: float = 30
) -> AsyncIterator[tuple[Client, ServerState, Outcome]]:
    """A fast connection serving `app` on one end of a socket pair."""
    ours, theirs = trio.socket.socketpair()
    state = ServerState(app, keep_alive, {})
    outcome = Outcome()

    async def serve() -> None:
        outcome.value = await H1Connection(trio.SocketStream(ours), state, None, None).run()
        outcome.ended.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            stream = trio.SocketStream(theirs)
            yield Client(stream), state, outcome
            await stream.aclose()


def request(path: str = "/a", body: bytes = b"", extra: bytes = b"") -> bytes:
    method = b"POST" if body else b"GET"
    length = b"Content-Length: %d\r\n" % len(body) if body else b""
    return b"%s %s HTTP/1.1\r\nHost: t\r\n%s%s\r\n%s" % (method, path.encode(), length, extra, body)


async def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    async with connection(echo) as (client, _, _):
        await client.send(
            request("/one", b"1") + request("/two%20x?q=2") + request("/three", b"333")
        )
        for expected in (b"POST /one ? 1", b"GET /two x ?q=2 ", b"POST /three ? 333"):
            status, headers, body = await client.answer()
            assert (status, body) == (200, expected)
            assert headers[b"content-length"] == str(len(expected)).encode()
            assert b"date" in headers and b"connection" not in headers


async def test_a_body_arriving_in_pieces_is_given_as_it_comes() -> None:
    pieces: list[bytes] = []
    first_piece = trio.Event()

    async def recorder(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            pieces.append(message["body"])
            first_piece.set()
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with connection(recorder) as (client, _, _):
        await client.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nabc")
        await first_piece.wait()
        await client.send(b"def")
        status, headers, body = await client.answer()
        assert (status, body) == (204, b"") and b"content-length" not in headers
    assert b"".join(pieces) == b"abcdef" and pieces[0] == b"abc"


async def test_a_streamed_answer_is_chunked() -> None:
    async def streaming(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"ab", b"", b"cd"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"e", "more_body": False})

    async with connection(streaming) as (client, _, _):
        for _ in range(2):
            await client.send(request())
            status, headers, body = await client.answer()
            assert (status, body, headers[b"transfer-encoding"]) == (200, b"abcde", b"chunked")


async def test_an_app_failure_is_500_and_the_connection_ends() -> None:
    async def failing(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        raise ValueError("boom")

    async with connection(failing) as (client, _, outcome):
        await client.send(request())
        status, headers, body = await client.answer()
        assert (status, body, headers[b"connection"]) == (500, b"", b"close")
        assert await client.closed()
    assert outcome.ended.is_set() and outcome.value is None


async def test_an_app_that_answers_nothing_is_500() -> None:
    async def silent(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        return None

    async with connection(silent) as (client, _, _):
        await client.send(request())
        assert (await client.answer())[0] == 500
        assert await client.closed()


async def refusing(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Answers without reading the body, as a handler refusing a request early may."""
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b"no"})


async def test_a_small_unread_body_is_dropped_and_the_next_request_served() -> None:
    async with connection(refusing) as (client, _, _):
        await client.send(request(body=b"x" * 5000) + request("/next"))
        for _ in range(2):
            status, headers, body = await client.answer()
            assert (status, body) == (401, b"no") and b"connection" not in headers


async def test_a_large_unread_body_ends_the_connection_after_the_answer() -> None:
    async with connection(refusing) as (client, _, _):
        await client.send(request(body=b"x" * 100_000))
        status, headers, body = await client.answer()
        assert (status, body, headers[b"connection"]) == (401, b"no", b"close")
        assert await client.closed()


async def test_a_wrong_content_length_from_the_app_ends_the_connection() -> None:
    async def lying(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ab"})

    async with connection(lying) as (client, _, _):
        await client.send(request())
        assert (await client.answer())[2] == b"ab"
        await client.send(request())
        assert (await client.answer())[2] == b"ab"


@pytest.mark.parametrize(
    "header",
    [(b"x", b"a\r\nSet-Cookie: b"), (b"x", b"a\x00b"), (b"bad name", b"v"), (b"x\n", b"v")],
)
async def test_a_header_h11_would_refuse_is_never_written(header: tuple[bytes, bytes]) -> None:
    async def injecting(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [header]})
        await send({"type": "http.response.body", "body": b"ab"})

    async with connection(injecting) as (client, _, _):
        await client.send(request())
        status, headers, _ = await client.answer()
        assert status == 500 and b"set-cookie" not in headers


async def test_an_unknown_message_is_an_app_failure() -> None:
    async def odd(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await send({"type": "http.response.trailers", "headers": []})

    async with connection(odd) as (client, _, _):
        await client.send(request())
        assert (await client.answer())[0] == 500


async def test_after_the_body_receive_waits_for_the_client_to_leave() -> None:
    left = trio.Event()

    async def parked(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.request"
        assert (await receive())["type"] == "http.disconnect"
        left.set()

    async with connection(parked) as (client, _, _):
        await client.send(request())
        await client.stream.send_eof()
        await left.wait()


async def test_a_client_resetting_while_the_app_waits_is_a_disconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []
    left = trio.Event()

    async def parked(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        seen.append((await receive())["type"])
        seen.append((await receive())["type"])
        left.set()

    async with connection(parked) as (client, _, outcome):
        await client.send(request())
        client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.stream.socket.close()  # a reset, not an orderly close
        await left.wait()
        await outcome.ended.wait()
    assert seen == ["http.request", "http.disconnect"]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_client_that_half_closed_gets_no_invented_answer() -> None:
    async def leaving_unanswered(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await receive()  # the disconnect: the app answers nobody, as a cancelled pop does

    async with connection(leaving_unanswered) as (client, _, outcome):
        await client.send(request())
        await client.stream.send_eof()
        await outcome.ended.wait()
        assert await client.closed()


async def test_a_flood_pipelined_behind_a_waiting_app_does_not_hide_the_client_leaving() -> None:
    left = trio.Event()

    async def parked(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await receive()
        await receive()
        left.set()

    async with connection(parked) as (client, _, _):
        await client.send(request() + request("/" + "a" * 40_000))
        await client.stream.send_eof()
        await left.wait()


async def test_a_request_read_by_a_watcher_after_the_answer_is_kept() -> None:
    """quart-trio reads receive() in a task of its own until it is cancelled, a moment after the
    answer: a client's next request (here with a 20 KB body) may arrive in that moment."""
    next_sent = trio.Event()

    async def watching(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["path"] != "/first":
            await echo(scope, receive, send)
            return

        async def watcher() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            await trio.testing.wait_all_tasks_blocked()  # the watcher is reading the socket
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first"})
            await next_sent.wait()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

    async with connection(watching) as (client, _, _):
        await client.send(request("/first"))
        assert (await client.answer())[2] == b"first"
        await client.send(request("/second", b"y" * 20_000))
        next_sent.set()
        status, headers, body = await client.answer()
        assert (status, body) == (200, b"POST /second ? " + b"y" * 20_000)
        assert b"connection" not in headers


async def test_a_partly_sent_head_does_not_hold_up_shutdown() -> None:
    async with connection(echo) as (client, state, outcome):
        await client.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        await trio.testing.wait_all_tasks_blocked()
        state.terminate()
        await outcome.ended.wait()
        assert await client.closed()


async def test_a_complete_head_over_the_limit_is_handed_over() -> None:
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    async with connection(echo) as (client, _, outcome):
        await client.send(head)
        await outcome.ended.wait()
    assert outcome.value == head


async def test_a_declined_request_hands_over_every_byte_read() -> None:
    chunked = (
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    async with connection(echo) as (client, _, outcome):
        await client.send(request("/first") + chunked)
        assert (await client.answer())[2] == b"GET /first ? "
        await outcome.ended.wait()
    assert outcome.value == chunked


async def test_an_overlong_head_is_handed_over() -> None:
    async with connection(echo) as (client, _, outcome):
        huge = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000
        await client.send(huge)
        await outcome.ended.wait()
    assert outcome.value is not None and outcome.value.startswith(huge[:1000])


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    async with connection(echo, keep_alive=0.2) as (client, _, outcome):
        await client.send(request())
        await client.answer()
        assert await client.closed()
    assert outcome.ended.is_set() and outcome.value is None


async def test_shutdown_closes_idle_connections_and_tells_busy_ones() -> None:
    release = trio.Event()

    async def slow(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await release.wait()
        await echo(scope, receive, send)

    async with connection(slow) as (idle, state, _), connection(slow) as (busy, busy_state, _):
        await idle.send(request())
        await idle.answer()
        await busy.send(request("/slow"))
        await trio.sleep(0.05)
        state.terminate()
        assert await idle.closed()
        busy_state.terminate()
        release.set()
        status, headers, _ = await busy.answer()
        assert (status, headers[b"connection"]) == (200, b"close")
        assert await busy.closed()


async def test_an_app_can_ask_whether_its_client_has_left_without_reading() -> None:
    """A pipelined request waiting unread is a client still there; a closed side is one gone,
    and an app that then answers nobody leaves the connection closed without a 500."""
    seen: list[bool] = []
    asked = trio.Event()
    go_on = trio.Event()

    async def asking(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        client_left = scope["extensions"][CLIENT_LEFT]
        seen.append(client_left())
        if scope["path"] == "/wait":
            asked.set()
            await go_on.wait()
            seen.append(client_left())
            return  # as a pop whose client left
        await echo(scope, receive, send)

    async with connection(asking) as (client, _, outcome):
        await client.send(request("/one") + request("/two"))
        for path in (b"/one", b"/two"):
            status, _, body = await client.answer()
            assert (status, body) == (200, b"GET " + path + b" ? ")
        await client.send(request("/wait"))
        await asked.wait()
        await client.stream.send_eof()
        await trio.testing.wait_all_tasks_blocked()
        go_on.set()
        await outcome.ended.wait()
        assert await client.closed()
    assert seen == [False, False, False, True]


async def test_a_body_already_read_can_be_taken_without_waiting() -> None:
    """A body that came with its head is handed over whole; one still arriving is not, and
    `receive()` then gives it as it comes."""
    taken: list[bytes | None] = []
    split_asked = trio.Event()

    async def taking(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        body = scope["extensions"][BUFFERED_BODY]()
        taken.append(body)
        if scope["path"] == "/split":
            split_asked.set()
        if body is None:
            await echo(scope, receive, send)
            return
        assert scope["extensions"][BUFFERED_BODY]() is None  # taken once
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async with connection(taking) as (client, _, _):
        await client.send(request("/whole", b"12345") + request("/next", b"6"))
        assert (await client.answer())[2] == b"12345"
        assert (await client.answer())[2] == b"6"
        await client.send(b"POST /split HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
        await split_asked.wait()
        await client.send(b"cd")
        assert (await client.answer())[2] == b"POST /split ? abcd"
    assert taken == [b"12345", b"6", None]
