"""The `queen` command: `serve` (the server, with an embedded PostgreSQL when PG_HOST is unset),
`migrate` (apply the schema and exit), `token` (mint a signed bearer token), `proxy` (the auth
proxy and its user/token commands), and the internal `worker` entry of each worker process.

`serve` is the parent of the worker processes: it owns the embedded cluster, applies migrations,
starts NUM_WORKERS workers, restarts one that dies, and on SIGINT/SIGTERM stops them gracefully and
then stops PostgreSQL, so Ctrl-C leaves no process behind.

The parent stays small (some 25 MB against 55 MB with the worker's stack): it runs migrations as a
`queen migrate` child, and the web stack and database driver are imported only by the commands
that use them (the imports inside `main` and `_migrate_once`).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from queen import __version__, logs
from queen.actors.supervisor import backoff_delays
from queen.config import Config, ConfigError, comma_list
from queen.ids import uuid7_str
from queen.proxy.arguments import add_parser as add_proxy_parser
from queen.storage.file_buffer import BufferLocked, lock_directory
from queen.storage.pgcluster import ClusterError, PgCluster, find_bindir

log = logging.getLogger("queen")

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3  # `queen migrate` found no database to migrate; `serve` tries again
WORKER_STOP_TIMEOUT_S = 15.0
HEALTHY_RUN_S = 60.0
MIGRATION_RETRY_S = 2.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="queen", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"queen {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--port", type=int, help="HTTP port (overrides PORT)")
    serve.add_argument("--host", help="listen address (overrides HOST)")
    serve.add_argument("--dev", action="store_true", help="debug logging")
    commands.add_parser("migrate", help="apply pending schema migrations and exit")
    add_proxy_parser(commands)
    token = commands.add_parser(
        "token", help="print a signed bearer token (HS256 with JWT_SECRET, or EdDSA)"
    )
    token.add_argument("--sub", required=True, help="subject: stamped as producerSub on pushes")
    token.add_argument("--role", default="read-write", help="role claim (default read-write)")
    token.add_argument("--expires", default="1h", help="lifetime: 30m, 12h, 7d, 1y or never")
    token.add_argument("--algorithm", choices=("HS256", "EdDSA"), default="HS256")
    token.add_argument("--key-file", type=Path, help="EdDSA: Ed25519 private key (PEM)")
    token.add_argument("--kid", default="", help="key id header (EdDSA with a JWKS)")
    worker = commands.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--parent", type=int, required=True)
    worker.add_argument("--instance", help="id of the `queen serve` that started this worker")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "proxy":
        # The proxy reads its own environment (PORT, JWT_SECRET mean other things to it).
        logs.configure(os.environ.get("LOG_LEVEL", "info"), os.environ.get("LOG_FORMAT", "text"))
        from queen.proxy import commands as proxy_commands  # noqa: PLC0415  (parent stays small)

        return proxy_commands.main(args)
    try:
        config = Config.from_env(
            port=getattr(args, "port", None),
            host=getattr(args, "host", None),
            log_level="debug" if getattr(args, "dev", False) else None,
        )
    except ConfigError as error:
        print(f"queen: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "token":
        return _print_token(args, config)
    unusable = _unusable_key(config)
    if unusable is not None:
        print(f"queen: configuration error: {unusable}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(config.log_level, config.log_format)
    try:
        if args.command == "worker":
            from queen.worker import run_worker  # noqa: PLC0415  (parent stays small)

            trio.run(run_worker, config, args.index, args.parent, args.instance)
            return 0
        if args.command == "migrate":
            return trio.run(_migrate_once, config)
        return trio.run(_serve, config)
    except BaseException as error:
        # Nurseries wrap what they raise in exception groups; an operator error must still end
        # as one log line, not as a group traceback.
        cause = _sole_cause(error)
        if isinstance(cause, ClusterError):
            log.error("embedded PostgreSQL: %s", cause)
            return 1
        if isinstance(cause, MigrationRefused):
            log.error("migration refused: %s", cause)
            return 1
        if isinstance(cause, BufferLocked | PortInUse):
            log.error("%s", cause)
            return 1
        if isinstance(cause, KeyboardInterrupt):
            return 130
        raise


def _unusable_key(config: Config) -> str | None:
    """Why the configured JWT key cannot be loaded (naming the variable), or None: a server that
    would refuse every token refuses to start instead. Imported here, and only with JWT on, so
    the `serve` parent stays small."""
    if not config.jwt_enabled:
        return None
    from queen.security.keys import UnusableKey  # noqa: PLC0415
    from queen.security.tokens import Verifier  # noqa: PLC0415

    try:
        Verifier(config)
    except UnusableKey as error:
        return str(error)
    return None


def _print_token(args: argparse.Namespace, config: Config) -> int:
    """The first JWT_ISSUER and JWT_AUDIENCE entries are claimed, so the token passes this
    server's own checks."""
    from queen.security.minting import duration_s, mint  # noqa: PLC0415

    try:
        token = mint(
            sub=args.sub,
            role=args.role,
            expires_in_s=duration_s(args.expires),
            algorithm=args.algorithm,
            secret=config.jwt_secret,
            private_key_pem=args.key_file.read_bytes() if args.key_file else b"",
            issuer=next(iter(comma_list(config.jwt_issuer)), ""),
            audience=next(iter(comma_list(config.jwt_audience)), ""),
            kid=args.kid,
        )
    except (ValueError, OSError) as error:
        print(f"queen token: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(token)
    return 0


def _sole_cause(error: BaseException) -> BaseException:
    """The one exception inside (possibly nested) groups of one, else the error itself."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def _start_embedded(config: Config, stack: AsyncExitStack) -> Config:
    if not config.embedded_postgres:
        return config
    cluster = PgCluster(data_dir=config.data_path, bindir=find_bindir(config.pg_bindir))
    log.info("starting embedded PostgreSQL", extra={"data_dir": str(cluster.data_dir)})
    # Registered before starting: a Ctrl-C that lands while the start-up thread runs is raised
    # after it returns, and the postmaster it started must still be stopped.
    stack.push_async_callback(trio.to_thread.run_sync, cluster.stop)
    await trio.to_thread.run_sync(cluster.start)
    parts = cluster.dsn_parts()
    return config.with_database(
        str(parts["host"]),
        int(parts["port"]),
        str(parts["user"]),
        str(parts["password"]),
        str(parts["database"]),
    )


class MigrationRefused(RuntimeError):
    """The schema cannot be brought to this release (queen.storage.migrations says why)."""


async def _migrate_once(config: Config) -> int:
    # Imported here so the `serve` parent, which runs this as a child, never loads the driver.
    import trio_asyncio  # noqa: PLC0415

    from queen.db.connect import ConnectParams, connect  # noqa: PLC0415
    from queen.storage import migrations  # noqa: PLC0415

    async with AsyncExitStack() as stack:
        config = await _start_embedded(config, stack)
        async with trio_asyncio.open_loop():
            params = ConnectParams.from_config(config, "queen-migrate")
            try:
                conn = await trio_asyncio.aio_as_trio(connect)(params)
                try:
                    outcome = await trio_asyncio.aio_as_trio(migrations.migrate)(conn)
                finally:
                    await trio_asyncio.aio_as_trio(conn.close)()
            except migrations.MigrationError as error:
                raise MigrationRefused(str(error)) from None
            except Exception as error:
                # Unreachable, or lost mid-way (a migration runs in one transaction): nothing
                # is wrong with the schema, so `serve` tries again.
                log.error("schema not applied: database unreachable", extra={"error": str(error)})
                return EXIT_UNREACHABLE
        log.info(
            "schema up to date",
            extra={"release": outcome.release, "applied": list(outcome.applied)},
        )
    return 0


async def _migrate_until_done(
    config: Config, fatal: trio.Event, task_status: trio.TaskStatus[None]
) -> None:
    """Apply migrations (a `queen migrate` child) before workers start; if PostgreSQL is down,
    keep trying in the background (workers then answer 503) rather than refuse to start. A
    refused migration found before the workers start is raised; found later, it stops the
    running server through `fatal`."""
    attempt = 0
    # Capped like the slots' reconnect: once PostgreSQL is back, /health turns 200 within ~2 s,
    # and the schema must not lag far behind it.
    delay = backoff_delays(0.25, MIGRATION_RETRY_S)
    started = False
    argv = [sys.executable, "-m", "queen", "migrate"]
    while True:
        # A session of its own, as workers have: a Ctrl-C is for the parent, which cancels this.
        ran = await trio.run_process(
            argv, env=_worker_env(config), check=False, start_new_session=True
        )
        code = ran.returncode
        if code == EXIT_UNREACHABLE:
            if not started:
                started = True
                task_status.started()
            await trio.sleep(delay(attempt))
            attempt += 1
            continue
        if code != 0:
            refused = MigrationRefused(f"`queen migrate` exited with {code}")
            if not started:
                raise refused
            log.error("migration refused: %s", refused)
            fatal.set()
            return
        if not started:
            task_status.started()
        return


def _worker_env(config: Config) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PORT": str(config.port),
            "HOST": config.host,
            "LOG_LEVEL": config.log_level,
            "PG_HOST": config.pg_host or "",
            "PG_PORT": str(config.pg_port),
            "PG_USER": config.pg_user,
            "PG_PASSWORD": config.pg_password,
            "PG_DB": config.pg_db,
        }
    )
    return env


async def _run_worker_process(
    config: Config, index: int, instance_id: str, stop: trio.Event, fatal: trio.Event
) -> None:
    """Keep worker `index` running until `stop`; restart it (with backoff) when it dies. Each
    incarnation gets the same `instance_id`, by which it finds its predecessor's leases.

    A worker that served for HEALTHY_RUN_S before dying starts the backoff afresh. Cancellation
    (a second signal, a fatal error) kills the process: no worker may outlive its parent's task.
    """
    delay = backoff_delays(0.5, 30.0)
    crashes = 0
    argv = [
        sys.executable,
        "-m",
        "queen",
        "worker",
        "--index",
        str(index),
        "--parent",
        str(os.getpid()),
        "--instance",
        instance_id,
    ]
    while not stop.is_set():
        started_at = trio.current_time()
        process = await trio.lowlevel.open_process(
            argv, env=_worker_env(config), start_new_session=True
        )
        try:
            async with trio.open_nursery() as nursery:

                async def forward_stop(proc: trio.Process = process) -> None:
                    await stop.wait()
                    proc.send_signal(signal.SIGTERM)
                    with trio.move_on_after(WORKER_STOP_TIMEOUT_S):
                        await proc.wait()
                        return
                    log.warning(
                        "worker did not stop in time; killing it", extra={"worker_id": index}
                    )
                    proc.kill()

                nursery.start_soon(forward_stop)
                code = await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        if stop.is_set():
            return
        if code == EXIT_CONFIG:
            log.error("worker rejected the configuration; stopping", extra={"worker_id": index})
            fatal.set()
            return
        if trio.current_time() - started_at >= HEALTHY_RUN_S:
            crashes = 0
        log.error(
            "worker exited; restarting",
            extra={"worker_id": index, "exit_code": code, "restart_in_s": delay(crashes)},
        )
        with trio.move_on_after(delay(crashes)):
            await stop.wait()
        crashes += 1


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


class PortInUse(RuntimeError):
    """Another process listens on our port; with SO_REUSEPORT we would silently share it."""


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


async def _serve(config: Config) -> int:
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
    async with AsyncExitStack() as stack:
        config = await _start_embedded(config, stack)
        stop, fatal = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(_migrate_until_done, config, fatal)

            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        if stop.is_set():
                            break
                        log.info("shutting down")
                        stop.set()
                nursery.cancel_scope.cancel()

            async def watch_fatal() -> None:
                await fatal.wait()
                stop.set()

            nursery.start_soon(watch_signals)
            nursery.start_soon(watch_fatal)
            # Drawn per start: instances sharing a database never take each other's leases back.
            instance_id = uuid7_str()
            async with trio.open_nursery() as workers:
                for index in range(config.num_workers):
                    workers.start_soon(_run_worker_process, config, index, instance_id, stop, fatal)
            nursery.cancel_scope.cancel()
    log.info("queen stopped")
    return 1 if fatal.is_set() else 0


if __name__ == "__main__":
    raise SystemExit(main())
