"""One worker process: a trio run with one asyncio loop (for asyncpg), the supervision tree of
its actors (queen/actors/root.py) started before the HTTP server, and a graceful stop.

Workers share the HTTP port through SO_REUSEPORT, so the kernel spreads connections among them.
On SIGTERM/SIGINT a worker stops accepting, answers parked long-polls as empty, lets in-flight
requests finish (up to 10 s), then cancels its actors; a second signal stops it at once. A worker
whose parent died stops by itself, so a killed `queen serve` leaves no orphans serving the port.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket

import trio
import trio_asyncio

from queen import __version__, memory
from queen.actors.root import Services
from queen.config import Config
from queen.http.access import AccessGate
from queen.http.asgi import build_asgi
from queen.http.serving import Server
from queen.ids import uuid7_str
from queen.metrics.asgi import Observed
from queen.metrics.families import remove_stale_directories, run_directory
from queen.security.tokens import Verifier

log = logging.getLogger("queen.worker")

GRACEFUL_TIMEOUT_S = 10.0
KEEP_ALIVE_TIMEOUT_S = 75.0
LISTEN_BACKLOG = 1024
GC_YOUNG_THRESHOLD = 50_000
PARENT_CHECK_INTERVAL_S = 0.5


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(False)
    return sock


async def _watch_signals(stop: trio.Event, nursery: trio.Nursery) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if stop.is_set():
                log.warning("second signal: stopping at once")
                nursery.cancel_scope.cancel()
                return
            log.info(
                "signal received: shutting down gracefully",
                extra={"signal": signal.Signals(signum).name},
            )
            stop.set()


async def _watch_parent(stop: trio.Event, parent_pid: int) -> None:
    """Polling is the only portable way to notice reparenting; there is no event to wait on."""
    while os.getppid() == parent_pid:  # noqa: ASYNC110
        await trio.sleep(PARENT_CHECK_INTERVAL_S)
    log.warning("parent process is gone: shutting down")
    stop.set()


def _tune_garbage_collection() -> None:
    """A 1000-message push builds some ten thousand dicts and lists; with the default thresholds
    that runs several collections per request, and the older generations walk the whole heap
    (profiled under push@1000: the line parsing a push body fell from 14.7% to 7.5% of worker
    samples with this tuning). Objects made at start-up (modules, the app, its routes) live as
    long as the worker, so they are frozen out of collections altogether, and the young generation
    is allowed to grow larger before one runs. Nearly all garbage here is freed by reference
    counting; cycles just wait a little longer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    memory.give_back()


def _verifier(config: Config, services: Services) -> Verifier | None:
    """The gate's token check, reading the JWKS actor's keys; None with JWT off."""
    if not config.jwt_enabled:
        return None
    return Verifier(config, services.jwks.snapshot, services.jwks.request_refresh)


async def run_worker(
    config: Config, worker_id: int, parent_pid: int | None = None, instance_id: str | None = None
) -> None:
    sock = listening_socket(config.host, config.port)
    stop = trio.Event()
    instance_id = instance_id or uuid7_str()
    metrics_directory = run_directory(parent_pid or os.getpid(), instance_id)
    if worker_id == 0:
        remove_stale_directories(keep=metrics_directory)
    async with trio_asyncio.open_loop(), trio.open_nursery() as root:
        services = Services(config, worker_id, instance_id, metrics_directory)
        root.start_soon(_watch_signals, stop, root)
        if parent_pid is not None:
            root.start_soon(_watch_parent, stop, parent_pid)
        await root.start(services.run)

        _tune_garbage_collection()
        log.info(
            "worker serving",
            extra={"worker_id": worker_id, "port": config.port, "version": __version__},
        )
        app = Observed(
            AccessGate(build_asgi(services), config, _verifier(config, services)),
            services.metrics,
            services.recorder.pending,
            config.access_log,
            services.count_in_flight,
        )
        server = Server(
            app,
            keep_alive_timeout_s=KEEP_ALIVE_TIMEOUT_S,
            graceful_timeout_s=GRACEFUL_TIMEOUT_S,
            backlog=LISTEN_BACKLOG,
        )
        await server.serve(sock, stop.wait, services.begin_shutdown)
        log.info("worker stopped", extra={"worker_id": worker_id})
        root.cancel_scope.cancel()
