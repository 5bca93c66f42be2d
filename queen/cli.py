"""The `queen` command: `serve` (the server, with an embedded PostgreSQL when PG_HOST is unset),
`migrate` (apply the schema and exit), `token` (mint a signed bearer token), `proxy` (the auth
proxy and its user/token commands), and the internal `worker` entry of each worker process.

`serve` is the parent of the worker processes (queen/serve.py, queen/supervise.py). It stays
small (some 20 MB against 66 MB for a worker) because trio, the web stack and the database
driver are imported only by the commands that use them (the imports inside `main` and
`_migrate_once`); an import added at the top of this module lands in the parent too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from queen import __version__, logs
from queen.config import Config, ConfigError, comma_list
from queen.proxy.arguments import add_parser as add_proxy_parser
from queen.serve import PortInUse, embedded_database, serve
from queen.storage.buffer_lock import BufferLocked
from queen.storage.pgcluster import ClusterError
from queen.supervise import EXIT_CONFIG, EXIT_UNREACHABLE, MigrationRefused

log = logging.getLogger("queen")


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
    unusable = _unusable_key_apart(config) if args.command == "serve" else _unusable_key(config)
    if unusable is not None:
        print(f"queen: configuration error: {unusable}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(config.log_level, config.log_format)
    try:
        if args.command == "serve":
            return serve(config)
        # trio (with ssl and attrs) only in the children: the `serve` parent does without.
        import trio  # noqa: PLC0415

        if args.command == "worker":
            from queen.worker import run_worker  # noqa: PLC0415

            trio.run(run_worker, config, args.index, args.parent, args.instance)
            return 0
        with embedded_database(config) as (migrated, _):
            return trio.run(_migrate_once, migrated)
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


def _unusable_key_apart(config: Config) -> str | None:
    """`_unusable_key` in a forked child: loading a key imports jwt and cryptography (with ssl,
    some 15 MB of RSS), which the `serve` parent would otherwise carry for the server's whole
    life to have checked the key once. The child answers through a pipe."""
    if not config.jwt_enabled:
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 0
        try:
            os.write(write_fd, (_unusable_key(config) or "").encode())
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    with open(read_fd, "rb") as answer:
        reason = answer.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return "the JWT settings could not be checked (the error is above)"
    return reason or None


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


async def _migrate_once(config: Config) -> int:
    # Imported here so the `serve` parent, which runs this as a child, never loads the driver.
    import trio_asyncio  # noqa: PLC0415

    from queen.db.connect import ConnectParams, connect  # noqa: PLC0415
    from queen.storage import migrations  # noqa: PLC0415

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
            # Unreachable, or lost mid-way (a migration runs in one transaction): nothing is
            # wrong with the schema, so `serve` tries again.
            log.error("schema not applied: database unreachable", extra={"error": str(error)})
            return EXIT_UNREACHABLE
    log.info(
        "schema up to date", extra={"release": outcome.release, "applied": list(outcome.applied)}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
