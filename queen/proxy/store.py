"""The proxy's PostgreSQL state: users and the sessions that make tokens revocable (D-P5).

It owns a small asyncpg pool (the original used two connections) driven from trio through
trio-asyncio, applies the proxy's own numbered migrations (sql/proxy/NNN_name.sql, recorded in
queen_proxy.schema_migrations with a checksum) and runs the named statements of
sql/queries/proxy.sql. Nothing else in queen/proxy/ speaks SQL.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
import trio
import trio_asyncio

from queen.db.connect import ssl_mode
from queen.db.queries import named
from queen.proxy.config import ProxyConfig
from queen.storage.migrations import Migration, MigrationError, migrations_in

log = logging.getLogger("queen.proxy")

_LOCK_KEY = 0x5150525859  # "QPRXY": serialises proxy migrations across instances
SESSION_CACHE_S = 30.0


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password_hash: str | None
    role: str
    email: str | None

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(row["id"], row["username"], row["password_hash"], row["role"], row["email"])


class UsernameTaken(ValueError):
    """create-user for a name that exists already."""


def proxy_migrations() -> list[Migration]:
    directory = resources.files("queen.sql").joinpath("proxy")
    return migrations_in(directory)


def _utc_naive(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


class ProxyStore:
    """Users and sessions; session checks are cached up to 30 s so a gate check rarely queries."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._session_cache: dict[str, tuple[bool, float]] = {}

    async def _run(self, call: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await trio_asyncio.aio_as_trio(call)(*args)

    async def _fetchrow(self, name: str, *args: Any) -> Any:
        return await self._run(self._pool.fetchrow, named("proxy", name), *args)

    async def _execute(self, name: str, *args: Any) -> Any:
        return await self._run(self._pool.execute, named("proxy", name), *args)

    async def migrate(self) -> list[str]:
        """Apply the proxy migrations this database lacks, in one transaction."""
        return list(await self._run(self._migrate))

    async def _migrate(self) -> list[str]:
        applied: list[str] = []
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(named("proxy", "migration_lock"), _LOCK_KEY)
            await conn.execute(named("proxy", "migration_bookkeeping"))
            recorded = {
                row["version"]: row["checksum"]
                for row in await conn.fetch(named("proxy", "recorded_migrations"))
            }
            for migration in proxy_migrations():
                if migration.version in recorded:
                    if recorded[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"proxy migration {migration.version:03d}_{migration.name} changed "
                            "after it was applied; add a new migration instead"
                        )
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    named("proxy", "record_migration"),
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
                applied.append(f"{migration.version:03d}_{migration.name}")
        return applied

    async def ping(self) -> None:
        await self._fetchrow("ping")

    async def user_by_username(self, username: str) -> User | None:
        row = await self._fetchrow("user_by_username", username)
        return User.from_row(row) if row else None

    async def user_by_google_sub(self, sub: str) -> User | None:
        row = await self._fetchrow("user_by_google_sub", sub)
        return User.from_row(row) if row else None

    async def user_by_email(self, email: str) -> User | None:
        row = await self._fetchrow("user_by_email", email.lower())
        return User.from_row(row) if row else None

    async def create_user(self, username: str, password_hash: str | None, role: str) -> int:
        row = await self._fetchrow("create_user", username, password_hash, role)
        if row is None:
            raise UsernameTaken(username)
        return int(row["id"])

    async def link_google(self, user_id: int, google_sub: str, email: str) -> None:
        await self._execute("link_google", user_id, google_sub, email.lower())

    async def provision_google_user(self, email: str, google_sub: str, role: str) -> User:
        row = await self._fetchrow("provision_google_user", email.lower(), role, google_sub)
        return User.from_row(row)

    async def record_session(self, user_id: int, jti: str, expires_at: dt.datetime) -> None:
        await self._execute("record_session", user_id, jti, _utc_naive(expires_at))

    async def session_active(self, jti: str) -> bool:
        now = trio.current_time()
        cached = self._session_cache.get(jti)
        if cached is not None and now - cached[1] < SESSION_CACHE_S:
            return cached[0]
        row = await self._fetchrow("session_active", jti)
        active = bool(row[0])
        if len(self._session_cache) > 50_000:
            self._session_cache.clear()
        self._session_cache[jti] = (active, now)
        return active

    async def revoke_session(self, jti: str) -> None:
        self._session_cache[jti] = (False, trio.current_time())
        await self._execute("revoke_session", jti)

    async def forget_expired_sessions(self) -> None:
        await self._execute("forget_expired_sessions")


@asynccontextmanager
async def open_store(config: ProxyConfig) -> AsyncIterator[ProxyStore]:
    """A store on the proxy database; call inside trio_asyncio.open_loop()."""
    pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(
        host=config.pg_host,
        port=config.pg_port,
        user=config.pg_user,
        password=config.pg_password,
        database=config.pg_db,
        ssl=ssl_mode(config.pg_use_ssl, config.pg_ssl_reject_unauthorized),
        min_size=1,
        max_size=4,
        timeout=2.0,
        max_inactive_connection_lifetime=30.0,
        server_settings={"application_name": "queen-proxy"},
    )
    try:
        yield ProxyStore(pool)
    finally:
        with trio.CancelScope(shield=True):
            await trio_asyncio.aio_as_trio(pool.close)()
