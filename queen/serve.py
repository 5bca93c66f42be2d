"""`queen serve`, the parent process: refuses to start where it would harm another instance (a
taken port, a locked file buffer), warns about an open exposure, starts the embedded PostgreSQL
when PG_HOST is unset, then hands over to the process tree (queen/supervise.py) and stops
PostgreSQL after it, so Ctrl-C leaves no process behind.

Synchronous and small on purpose: the web stack, the driver and trio belong to the children.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

from queen import __version__
from queen.config import Config
from queen.storage.buffer_lock import BufferLocked, lock_directory
from queen.storage.pgcluster import PgCluster, find_bindir
from queen.supervise import ProcessTree, signals_as_wakeups

log = logging.getLogger("queen")


class PortInUse(RuntimeError):
    """Another process listens on our port; with SO_REUSEPORT we would silently share it."""


def serve(config: Config) -> int:
    """0 once stopped by a signal, 1 when a refusal (a child's) stopped the server."""
    _check_port_free(config)
    _lock_buffer_root(config)
    log.info(
        "queen starting",
        extra={"version": __version__, "port": config.port, "workers": config.num_workers},
    )
    _warn_about_exposure(config)
    if config.db_pool_size // config.num_workers > config.admin_slots_per_worker():
        log.info(
            "DB_POOL_SIZE is more than admin work uses: capped",
            extra={
                "db_pool_size": config.db_pool_size,
                "admin_connections": config.admin_slots_per_worker() * config.num_workers,
            },
        )
    # Signals are taken over first: one arriving while PostgreSQL starts stops the server once
    # it has started, and PostgreSQL is stopped with it.
    with signals_as_wakeups() as wakeups, embedded_database(config) as (resolved, postmaster):
        tree = ProcessTree.of_server(resolved, wakeups, postmaster)
        tree.run()
    log.info("queen stopped")
    return 1 if tree.fatal else 0


@contextlib.contextmanager
def embedded_database(config: Config) -> Iterator[tuple[Config, PgCluster | None]]:
    """The configuration pointing at the embedded cluster, and the cluster, running while
    inside; `config` itself and no cluster when PG_HOST names a database."""
    if not config.embedded_postgres:
        yield config, None
        return
    cluster = PgCluster(
        data_dir=config.data_path,
        bindir=find_bindir(config.pg_bindir),
        not_port=config.port,
    )
    log.info("starting embedded PostgreSQL", extra={"data_dir": str(cluster.data_dir)})
    try:
        # Inside the try: a start interrupted half-way must still stop the postmaster it made.
        cluster.start()
        parts = cluster.dsn_parts()
        resolved = config.with_database(
            str(parts["host"]),
            int(parts["port"]),
            str(parts["user"]),
            str(parts["password"]),
            str(parts["database"]),
        )
        yield resolved, cluster
    finally:
        cluster.stop()


def _lock_buffer_root(config: Config) -> None:
    """Refuse to share FILE_BUFFER_DIR with a live instance; an unusable directory only costs the
    disk fallback (logged), never the server."""
    try:
        lock_directory(Path(config.file_buffer_dir))
    except BufferLocked:
        raise
    except OSError as error:
        log.error(
            "file buffer directory unusable; pushes cannot fail over to disk",
            extra={"dir": config.file_buffer_dir, "error": str(error)},
        )


def _warn_about_exposure(config: Config) -> None:
    """Loud, once: every route, the administrative ones included, is open to whoever can reach a
    non-loopback address while JWT is off. Weak settings (spec D-J2) get a warning too."""
    if not config.jwt_enabled and not _is_loopback(config.host):
        log.warning(
            "JWT_ENABLED is false and queen listens on a non-loopback address: anyone who can "
            "reach this port can push, pop, delete queues and switch maintenance on. Set "
            "JWT_ENABLED=true (docs/security.md) or HOST=127.0.0.1",
            extra={"host": config.host, "port": config.port},
        )
    if not config.jwt_enabled:
        return
    if config.jwt_secret and len(config.jwt_secret.encode()) < 32:
        log.warning("JWT_SECRET is shorter than 32 bytes: easy to guess offline")
    if (config.jwt_public_key or config.jwt_jwks_url) and not (
        config.jwt_issuer and config.jwt_audience
    ):
        log.warning(
            "JWT_ISSUER or JWT_AUDIENCE is not set: tokens the same issuer made for other "
            "applications are accepted"
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _check_port_free(config: Config) -> None:
    """Bind once *without* SO_REUSEPORT: that fails while anyone (another queen's workers
    included) listens on the port, so a second instance refuses to start instead of taking half
    of the first one's connections."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((config.host, config.port))
        except OSError as error:
            raise PortInUse(
                f"port {config.port} on {config.host} is in use: {error.strerror}"
            ) from None
