"""`queen proxy`, `queen proxy create-user` and `queen proxy create-token`.

create-user keeps the original's prompts and menus (§4.13) but reads the password without echo,
twice, and asks for 12 characters (D-P14); with --username and --role it runs unattended and reads
the password from standard input. Every token it prints is recorded in queen_proxy.sessions, so it
can be revoked like a browser session. create-token issues a service token for a user, creating a
password-less user of the given role when the name is new.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable

import asyncpg
import trio
import trio_asyncio

from queen.config import ConfigError
from queen.proxy.arguments import EXPIRY_CHOICES
from queen.proxy.config import ProxyConfig, parse_duration
from queen.proxy.passwords import PasswordRejected, hash_password
from queen.proxy.roles import ROLES
from queen.proxy.server import run_proxy
from queen.proxy.store import ProxyStore, UsernameTaken, open_store
from queen.proxy.tokens import TokenService
from queen.storage.migrations import MigrationError

log = logging.getLogger("queen.proxy")


def main(args: argparse.Namespace) -> int:
    command = getattr(args, "proxy_command", None)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded request
    try:
        if command is None:
            environ = dict(os.environ)
            if args.port:
                environ["PORT"] = str(args.port)
            trio.run(run_proxy, ProxyConfig.from_env(environ))
            return 0
        if command == "create-user":
            return _create_user(args)
        return _create_token(args)
    except ConfigError as error:
        print(f"queen proxy: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        # The proxy cannot work without its database: one log line, not a group traceback.
        failure = _database_failure(error)
        if failure is None:
            raise
        log.error("proxy database unusable: %s", failure)
        return 1


def _database_failure(error: BaseException) -> BaseException | None:
    """The database error inside (possibly nested) exception groups, if that is what stopped us."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error if isinstance(error, OSError | asyncpg.PostgresError | MigrationError) else None


def _menu(prompt: str, options: tuple[str, ...], read: Callable[[str], str], default: int) -> str:
    lines = [f"  {index}. {option}" for index, option in enumerate(options, 1)]
    answer = read("\n".join([prompt, *lines, f"Choice [{default}]: "])).strip() or str(default)
    if not answer.isdigit() or not 1 <= int(answer) <= len(options):
        raise ValueError(f"invalid choice {answer!r}")
    return options[int(answer) - 1]


def _ask_interactively() -> tuple[str, str, str, str]:
    username = input("Username: ").strip()
    if not username:
        raise ValueError("username is required")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != password:
        raise ValueError("the passwords differ")
    role = _menu("Role:", ROLES, input, 3)
    expires = _menu("Token expiry:", EXPIRY_CHOICES, input, 1)
    return username, password, role, expires


def _create_user(args: argparse.Namespace) -> int:
    try:
        if args.username:
            if not args.role:
                raise ValueError("--role is required with --username")
            password = sys.stdin.readline().rstrip("\r\n")
            username, role, expires = args.username.strip(), args.role, args.expires
        else:
            username, password, role, expires = _ask_interactively()
        password_hash = hash_password(password)
    except (ValueError, PasswordRejected) as error:
        print(f"queen proxy create-user: {error}", file=sys.stderr)
        return 1
    config = ProxyConfig.from_env(need_secret=expires != "skip")

    async def go(store: ProxyStore) -> int:
        try:
            user_id = await store.create_user(username, password_hash, role)
        except UsernameTaken:
            print("Username already exists", file=sys.stderr)
            return 1
        print(f"User {username!r} created with role {role}.")
        if expires != "skip":
            await _print_token(config, store, (user_id, username, role), expires)
        return 0

    return _with_store(config, go)


def _create_token(args: argparse.Namespace) -> int:
    config = ProxyConfig.from_env()

    async def go(store: ProxyStore) -> int:
        user = await store.user_by_username(args.username)
        if user is None:
            if not args.role:
                print("No such user; pass --role to create a service user", file=sys.stderr)
                return 1
            user_id, role = await store.create_user(args.username, None, args.role), args.role
        else:
            user_id, role = user.id, user.role
        await _print_token(config, store, (user_id, args.username, role), args.expires)
        return 0

    return _with_store(config, go)


async def _print_token(
    config: ProxyConfig, store: ProxyStore, user: tuple[int, str, str], expires: str
) -> None:
    user_id, username, role = user
    issued = TokenService(config).issue_session(
        user_id, username, role, lifetime_s=parse_duration("--expires", expires)
    )
    await store.record_session(user_id, issued.jti, issued.expires_at)
    print(f"Token (expires: {expires}):")
    print(issued.token)
    print(f"Authorization: Bearer {issued.token}")


def _with_store(config: ProxyConfig, body: Callable[[ProxyStore], Awaitable[int]]) -> int:
    async def run() -> int:
        async with trio_asyncio.open_loop(), open_store(config) as store:
            await store.migrate()
            return await body(store)

    return trio.run(run)
