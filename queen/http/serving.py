"""The HTTP server of a worker: queen's fast HTTP/1.1 loop for the plain requests clients send,
hypercorn for every connection that sends anything else.

Each accepted connection starts on the fast loop (queen/http/h1_connection.py). A request it
declines (HTTP/1.0 or 2, chunked bodies, `Expect`, upgrades, HEAD, an unusual or malformed head)
hands the connection, with the bytes read so far, to hypercorn's own per-connection server, which
serves it to the end exactly as it served every connection before, with the same lifespan state,
so the ASGI app sees one server either way.

hypercorn (with h11, h2, wsproto: ~3.5 MB of RSS per worker) is imported on the first handover,
synchronously (the loop stands still for it once, ~0.1 s): clients that speak plain HTTP/1.1
never load it. The app's lifespan is driven by queen/http/lifespan.py, not by hypercorn's.

Shutdown (the trigger returns): stop accepting; idle fast connections close at once, busy ones
after their answer (with `Connection: close`); hypercorn's connections close when idle; whatever
is still running after `graceful_timeout` is cancelled.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import trio

from queen.http.h1_connection import App, H1Connection, ServerState
from queen.http.lifespan import Lifespan

if TYPE_CHECKING:
    from hypercorn.app_wrappers import ASGIWrapper
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio.worker_context import WorkerContext

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


class _Handover:
    """hypercorn's side of the server: its configuration, the app as it calls it, and the
    context its connections watch to learn the worker stops."""

    def __init__(self, app: App, keep_alive_timeout_s: float, graceful_timeout_s: float) -> None:
        # Imported here, not at the top: this is the first handover (see the module docstring).
        from hypercorn.app_wrappers import ASGIWrapper  # noqa: PLC0415
        from hypercorn.config import Config as HypercornConfig  # noqa: PLC0415
        from hypercorn.trio.worker_context import WorkerContext  # noqa: PLC0415
        from hypercorn.typing import ASGIFramework  # noqa: PLC0415

        config = HypercornConfig()
        config.graceful_timeout = graceful_timeout_s
        config.keep_alive_timeout = keep_alive_timeout_s
        config.read_timeout = None
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.include_server_header = False  # the fast path names no server either
        self.config: HypercornConfig = config
        self.wrapped: ASGIWrapper = ASGIWrapper(cast(ASGIFramework, app))
        self.context: WorkerContext = WorkerContext(None)

    async def serve(self, stream: trio.SocketStream, already_read: bytes, state: Any) -> None:
        from hypercorn.trio.tcp_server import TCPServer  # noqa: PLC0415
        from hypercorn.typing import ConnectionState  # noqa: PLC0415

        # hypercorn's annotation names its TLS stream; a plain one is served the same way.
        replay = cast("trio.SSLStream[trio.SocketStream]", _Replay(stream, already_read))
        await TCPServer(self.wrapped, self.config, self.context, ConnectionState(state), replay)


class Server:
    def __init__(
        self,
        app: App,
        *,
        keep_alive_timeout_s: float,
        graceful_timeout_s: float,
        backlog: int,
    ) -> None:
        """The timeouts apply to the fast loop and hypercorn's connections alike: an idle
        connection closes after `keep_alive_timeout_s`, and at shutdown whatever still runs
        after `graceful_timeout_s` is cancelled."""
        self.app = app
        self.keep_alive_timeout_s = keep_alive_timeout_s
        self.graceful_timeout_s = graceful_timeout_s
        self.backlog = backlog
        self.lifespan_state: dict[str, Any] = {}
        self.fast = ServerState(app, keep_alive_timeout_s, self.lifespan_state)
        self.handover: _Handover | None = None

    async def serve(
        self,
        sock: socket.socket,
        shutdown_trigger: Callable[[], Awaitable[None]],
        stopping: Callable[[], None],
    ) -> None:
        """Serve until `shutdown_trigger` returns, then call `stopping` (which answers parked
        long-polls): by then every fast answer ends its connection, so those do too."""
        lifespan = Lifespan(self.app, self.lifespan_state)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.run)
            sock.listen(self.backlog)
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
                if self.handover is not None:
                    await self.handover.context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + self.graceful_timeout_s
            await lifespan.shutdown()
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
        if self.handover is None:
            self.handover = _Handover(self.app, self.keep_alive_timeout_s, self.graceful_timeout_s)
            if self.fast.terminated:  # a first handover while stopping: it only finishes
                await self.handover.context.terminated.set()
        await self.handover.serve(stream, already_read, self.lifespan_state.copy())
