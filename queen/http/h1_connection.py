"""One client connection on queen's fast HTTP/1.1 path: read a request, call the ASGI app in this
same task, write the answer in one send, and go round again.

Why not hypercorn for every request: after the lean routes took quart out of a single-message
push, hypercorn and h11 were the largest part left of a request's CPU (~40%: h11's event
machinery, a task spawned per request, an idle-timer task restarted twice per request, and the
head and body written in two sends). A keep-alive connection of a producer or consumer sends the
same plain shape over and over; this loop serves that shape with a regular-expression head parse
(queen/http/h1_head.py), no task per request and one `send` per answer.

Whatever is not that shape (see h1_head) is not served here: the connection, with every byte read
so far, is handed to hypercorn (queen/http/serving.py), which serves it from then on. The handover
happens before any of the request reaches the app, so nothing is answered twice.

ASGI as the app sees it matches hypercorn's: the same scope keys; the body arrives as `receive()`
asks for it (nothing is read ahead of the app, so a body the budget refuses is never buffered);
once the body is in, `receive()` waits for the client to leave and then reports
`http.disconnect`, which is how a parked pop notices its client is gone. A request that does not
wait can ask instead, without a task reading for it: the scope's extension `CLIENT_LEFT` is a
callable that says whether the client has closed or reset the connection. And a body that
arrived with its head can be taken at once (extension `BUFFERED_BODY`), with no timeout around
the read, since nothing is waited for.
"""

from __future__ import annotations

import logging
import os
import re
import select
import time
from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import trio

from queen.http.h1_head import MAX_HEAD_BYTES, TOKEN, RequestHead, parse_head

log = logging.getLogger("queen.http")

Message = MutableMapping[str, Any]
App = Callable[
    [dict[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

RECEIVE_BYTES = 65536
LINGER_S = 0.5  # how long a close waits for a client's unread bytes, so no reset eats the answer
DRAIN_LIMIT_BYTES = 65536  # an unread body up to this size is dropped, keeping the connection
DRAIN_TIMEOUT_S = 1.0
_HEADER_NAME = re.compile(TOKEN)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_NO_BODY_STATUSES = frozenset((204, 304))
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_DISCONNECT: Message = {"type": "http.disconnect"}
CLIENT_LEFT = "queen.client_left"  # offered where the kernel reports a peer's half-close
BUFFERED_BODY = "queen.buffered_body"
_HANGUP: int = getattr(select, "POLLRDHUP", 0)


class HttpDate:
    """The Date header, formatted once a second rather than once an answer."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


class ServerState:
    """What every fast connection of one worker shares: shutdown, the idle connections to close
    at shutdown, and the per-server parts of a scope."""

    def __init__(self, app: App, keep_alive_timeout: float, lifespan_state: dict[str, Any]) -> None:
        self.app = app
        self.keep_alive_timeout = keep_alive_timeout
        self.lifespan_state = lifespan_state
        self.terminated = False
        self.idle: set[trio.CancelScope] = set()
        self.date = HttpDate()

    def terminate(self) -> None:
        """Stop taking requests: idle connections close now, busy ones after their answer."""
        self.terminated = True
        for scope in self.idle:
            scope.cancel()


class H1Connection:
    def __init__(
        self,
        stream: trio.SocketStream,
        server: ServerState,
        client: tuple[str, int] | None,
        local: tuple[str, int] | None,
    ) -> None:
        self.stream = stream
        self.server = server
        self.client = client
        self.local = local
        self.buffer = bytearray()
        # The request being served.
        self.body_left = 0
        self.body_done = False
        self.peer_gone = False
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.response_state = 0  # 0 nothing sent, 1 started, 2 streaming, 3 complete
        self.chunked = False
        self.close_after = False
        self.hangup: select.poll | None = None

    async def run(self) -> bytes | None:
        """Serve requests until the connection ends (None) or hypercorn must take it: then the
        bytes read so far, which hypercorn reads first."""
        try:
            while True:
                end = await self._read_head()
                if end is None:
                    await self._close()
                    return None
                head = parse_head(bytes(self.buffer[:end])) if end else None
                if head is None:
                    return bytes(self.buffer)
                del self.buffer[:end]
                if not await self._serve(head):
                    await self._close()
                    return None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.aclose()
            return None

    async def _read_head(self) -> int | None:
        """The end of the next request head in the buffer; 0 when the head is too large to be
        one this path serves; None when the client left, stayed idle too long or the worker is
        stopping. A connection counts as idle until a whole head is in, as hypercorn counts it:
        a stopping worker closes one that sent only part of a head."""
        buffer = self.buffer
        searched = 0
        if buffer:
            await trio.lowlevel.checkpoint()  # a pipelined head: see _send_all
        with trio.move_on_after(self.server.keep_alive_timeout) as waiting:
            self.server.idle.add(waiting)
            try:
                while True:
                    end = buffer.find(b"\r\n\r\n", searched)
                    if end >= 0:
                        return end + 4 if end + 4 <= MAX_HEAD_BYTES else 0
                    if len(buffer) > MAX_HEAD_BYTES:
                        return 0
                    if self.server.terminated:
                        return None
                    searched = max(len(buffer) - 3, 0)
                    data = await self.stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        return None
                    buffer += data
            finally:
                self.server.idle.discard(waiting)
        return None

    async def _serve(self, head: RequestHead) -> bool:
        """Answer one request; whether the connection may carry another."""
        self.body_left = head.content_length
        self.body_done = False
        self.response_state = 0
        self.close_after = head.close
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "http_version": "1.1",
            "method": head.method,
            "scheme": "http",
            "path": unquote(head.path.decode("ascii")),
            "raw_path": head.path,
            "query_string": head.query,
            "root_path": "",
            "headers": head.headers,
            "client": self.client,
            "server": self.local,
            "state": self.server.lifespan_state.copy(),
            "extensions": self._extensions(),
        }
        try:
            await self.server.app(scope, self._receive, self._send)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        except Exception:
            log.exception("error while serving a request")
            if self.response_state == 0 and not self.peer_gone:
                await self._answer_failure()
            return False
        if self.response_state == 0:  # the app ended without answering
            if not self.peer_gone:  # (a pop whose client left answers nobody, by design)
                await self._answer_failure()
            return False
        if self.body_left and not self.close_after and not self.peer_gone:
            await self._drain_body()
        return (
            self.response_state == 3
            and not self.close_after
            and not self.peer_gone
            and self.body_left == 0
            and not self.server.terminated
        )

    async def _drain_body(self) -> None:
        """Read and drop a small body the app answered without reading, so the connection can
        carry the next request (as h11 does); a client too slow to send it is closed."""
        with trio.move_on_after(DRAIN_TIMEOUT_S):
            while not self.body_done:
                if (await self._receive())["type"] == "http.disconnect":
                    return

    async def _answer_failure(self) -> None:
        self.status, self.response_headers = 500, [(b"content-length", b"0")]
        self.close_after = True
        await self.stream.send_all(self._head(None))
        self.response_state = 3

    async def _receive(self) -> Message:
        if not self.body_done:
            if self.body_left == 0:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            buffer = self.buffer
            if not buffer:
                data = await self._receive_from_client()
                if not data:
                    return _DISCONNECT
                buffer += data
            body = self._take_body()
            return {"type": "http.request", "body": body, "more_body": not self.body_done}
        return await self._wait_for_disconnect()

    def _take_body(self) -> bytes:
        """As much of the body as the buffer holds."""
        take = min(len(self.buffer), self.body_left)
        body = bytes(self.buffer[:take])
        del self.buffer[:take]
        self.body_left -= take
        self.body_done = self.body_left == 0
        return body

    async def _wait_for_disconnect(self) -> Message:
        """Read on until the client leaves. What arrives meanwhile is kept for the next request:
        once the answer is out, the client may well have sent one (a watcher still reading is
        not yet cancelled). Before any answer, bytes past one head's worth are pipelined
        requests sent without waiting: they are dropped and this answer ends the connection
        (RFC 9112 §9.3.2 has the client send them again), so the client's leaving is still
        seen and the buffer stays bounded."""
        while not self.peer_gone and self.response_state != 3:
            if self.response_state != 0 and len(self.buffer) > MAX_HEAD_BYTES:
                await trio.sleep_forever()  # the rest waits until the answer is out
            data = await self._receive_from_client()
            if self.response_state == 0 and len(self.buffer) + len(data) > MAX_HEAD_BYTES:
                self.close_after = True
            else:
                self.buffer += data
        return _DISCONNECT

    def _extensions(self) -> dict[str, Any]:
        if not _HANGUP:  # not Linux: pops keep their watcher task
            return {BUFFERED_BODY: self._buffered_body}
        return {CLIENT_LEFT: self._client_left, BUFFERED_BODY: self._buffered_body}

    def _buffered_body(self) -> bytes | None:
        """The whole body when all of it has been read already, as `receive()` would give it;
        None when some of it is still to come (or `receive()` has begun taking it)."""
        if self.body_done or len(self.buffer) < self.body_left:
            return None
        return self._take_body()

    def _client_left(self) -> bool:
        """Whether the client has closed its side or reset the connection. A poll for the
        hang-up alone: bytes it sent meanwhile (a pipelined request) stay unread, and a
        client that only half-closed counts as gone, as it does for `http.disconnect` (so an
        app that answers nobody then is not answered 500 for)."""
        if not self.peer_gone:
            try:
                if self.hangup is None:
                    self.hangup = select.poll()
                    self.hangup.register(self.stream.socket.fileno(), _HANGUP)
                self.peer_gone = bool(self.hangup.poll(0))
            except (OSError, ValueError):  # the socket is closed already
                self.peer_gone = True
        return self.peer_gone

    async def _receive_from_client(self) -> bytes:
        """The client's next bytes; b"" once it has left (closed or reset)."""
        try:
            data = await self.stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.peer_gone = True
        return bytes(data)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.response_state != 0:
                raise RuntimeError("http.response.start sent twice")
            headers = list(message.get("headers", ()))
            for name, value in headers:
                if not _HEADER_NAME.fullmatch(name) or _CONTROL.search(value):
                    raise ValueError(f"a response header h11 would refuse: {name!r}")
            self.status = int(message["status"])
            self.response_headers = headers
            self.response_state = 1
        elif kind == "http.response.body":
            body: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            if self.response_state == 1:
                data = self._head(None if more else len(body))
                if self._carries_body():
                    data += self._frame(body, more)
                self.response_state = 2 if more else 3
            elif self.response_state == 2:
                data = self._frame(body, more) if self._carries_body() else b""
                self.response_state = 2 if more else 3
            else:
                raise RuntimeError("http.response.body outside a response")
            if self.peer_gone or not data:
                return
            close_after, self.close_after = self.close_after, True  # until the send completes
            try:
                await self._send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.peer_gone = True  # as hypercorn: the app is not told by an exception
            self.close_after = close_after
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    async def _send_all(self, data: bytes) -> None:
        """`send_all`, written straight to the socket when the kernel takes it all at once, as
        it nearly always does for an answer: trio's stream wraps each send in a conflict check,
        an error translation and a yield to the scheduler (~12 us per request of this worker's
        CPU, and one more scheduler pass). The head read that follows yields when it waits, and
        a head already waiting in the buffer yields too (`_read_head`), so a client pipelining
        requests still cannot keep the worker from its other tasks."""
        try:
            sent = os.write(self.stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            raise trio.BrokenResourceError(str(error)) from error
        if sent < len(data):
            await self.stream.send_all(memoryview(data)[sent:])

    def _carries_body(self) -> bool:
        return self.status >= 200 and self.status not in _NO_BODY_STATUSES

    def _head(self, length: int | None) -> bytes:
        """Status line and headers. `length` is the whole body's size when it is all in the
        first message; otherwise the body is chunked unless the app gave a Content-Length."""
        lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, _REASONS.get(self.status, b""))]
        framed = said_close = False
        for name, value in self.response_headers:
            lowered = name.lower()
            if lowered == b"content-length":
                framed = True
                if length is not None and value.strip() != b"%d" % length:
                    self.close_after = True  # the app's length is not the body's
            elif lowered == b"connection":
                said_close = b"close" in value.lower()
                self.close_after = self.close_after or said_close
            elif lowered in (b"transfer-encoding", b"date"):
                continue
            lines.append(b"%s: %s\r\n" % (name, value))
        if self._carries_body() and not framed:
            if length is None:
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                lines.append(b"content-length: %d\r\n" % length)
        else:
            self.chunked = False
        if self.body_left > DRAIN_LIMIT_BYTES or self.server.terminated:
            self.close_after = True  # too much unread body to drop before the next request
        if self.close_after and not said_close:
            lines.append(b"connection: close\r\n")
        lines.append(b"date: %s\r\n\r\n" % self.server.date.now())
        return b"".join(lines)

    def _frame(self, body: bytes, more: bool) -> bytes:
        if not self.chunked:
            return body
        framed = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
        return framed if more else framed + b"0\r\n\r\n"

    async def _close(self) -> None:
        """Close so the answer already sent reaches the client: end our side first and, when the
        client may still be sending (an unread body), read for a moment before closing."""
        try:
            await self.stream.send_eof()
            if self.body_left or self.buffer:
                with trio.move_on_after(LINGER_S):
                    while await self.stream.receive_some(RECEIVE_BYTES):
                        pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        await self.stream.aclose()
