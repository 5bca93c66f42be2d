"""The HTTP server of a worker: queen's fast HTTP/1.1 loop for the plain requests clients send,
hypercorn for every connection that sends anything else.

Each accepted connection starts on the fast loop (queen/http/h1_connection.py). A request it
declines (HTTP/1.0 or 2, chunked bodies, `Expect`, upgrades, HEAD, an unusual or malformed head)
hands the connection, with the bytes read so far, to hypercorn's own per-connection server, which
serves it to the end exactly as it served every connection before. hypercorn's lifespan handling
and worker context are used as they are, so the ASGI app sees one server either way.

Shutdown (the trigger returns): stop accepting; idle fast connections close at once, busy ones
after their answer (with `Connection: close`); hypercorn's connections close when idle; whatever
is still running after `graceful_timeout` is cancelled.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework, ConnectionState

from queen.http.h1_connection import App, H1Connection, ServerState

log = logging.getLogger("queen.http")


def _address(family: int, address: Any) -> tuple[str, int] | None:
    if family in (socket.AF_INET, socket.AF_INET6):
        return (str(address[0]), int(address[1]))
    return None


class _Replay(trio.abc.HalfCloseableStream):
    """The client's stream, giving back first what the fast loop had already read."""

    def __init__(self, stream: trio.SocketStream, already_read: bytes) -> None:
        self.stream = stream
        self.socket = stream.socket  # hypercorn reads the peer's address from it
        self.already_read = already_read

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.already_read:
            data, self.already_read = self.already_read, b""
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


class Server:
    def __init__(self, app: App, config: HypercornConfig) -> None:
        """`config` is hypercorn's, for the connections it serves; its keep-alive timeout,
        graceful timeout and backlog apply to the fast loop too."""
        self.app = app
        self.config = config
        self.wrapped = ASGIWrapper(cast(ASGIFramework, app))
        self.lifespan_state: dict[str, Any] = {}
        self.context = WorkerContext(None)
        self.fast = ServerState(app, config.keep_alive_timeout, self.lifespan_state)

    async def serve(
        self,
        sock: socket.socket,
        shutdown_trigger: Callable[[], Awaitable[None]],
        stopping: Callable[[], None],
    ) -> None:
        """Serve until `shutdown_trigger` returns, then call `stopping` (which answers parked
        long-polls): by then every fast answer ends its connection, so those do too."""
        lifespan = Lifespan(self.wrapped, self.config, self.lifespan_state)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            sock.listen(self.config.backlog)
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(
                        partial(trio.serve_listeners, handler_nursery=connections),
                        self._connection,
                        [listener],
                    )
                    await shutdown_trigger()
                    self.fast.terminate()
                    stopping()
                    accepting.cancel_scope.cancel()
                await self.context.terminated.set()
                connections.cancel_scope.deadline = (
                    trio.current_time() + self.config.graceful_timeout
                )
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _connection(self, stream: trio.SocketStream) -> None:
        """One client's connection. Whatever goes wrong with it ends it, never the worker."""
        try:
            await self._serve_connection(stream)
        except Exception:
            log.exception("a connection failed")
        finally:
            stream.socket.close()  # a no-op when already closed; cancelled, it still closes

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            client = _address(stream.socket.family, stream.socket.getpeername())
            local = _address(stream.socket.family, stream.socket.getsockname())
        except OSError:  # the client left before it was accepted; _connection closes it
            return
        already_read = await H1Connection(stream, self.fast, client, local).run()
        if already_read is None:
            return
        state = ConnectionState(self.lifespan_state.copy())
        # hypercorn's annotation names its TLS stream; a plain one is served the same way.
        replay = cast("trio.SSLStream[trio.SocketStream]", _Replay(stream, already_read))
        await TCPServer(self.wrapped, self.config, self.context, state, replay)
