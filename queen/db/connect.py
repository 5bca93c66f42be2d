"""Opening connections: the parameters every queen connection is made with (session timeouts,
application name, TLS), the JSON codecs, and a bare connection used as a `Runner` by the callers
that need a session of their own (the warm-up round, retention's cycles).

Everything here runs on the asyncio side of trio-asyncio, like every asyncpg call; the pooled
connections are owned by the connection-slot actors (queen/actors/slots.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import orjson

from queen.config import Config
from queen.db.runner import CallKind

T = TypeVar("T")

INFLIGHT_GRACE_S = 5.0


def call_deadline_s(config: Config) -> float | None:
    """How long a database call may take before its connection is presumed dead.

    PostgreSQL itself ends any statement after DB_STATEMENT_TIMEOUT; a call still unanswered 5 s
    later is not slow, its connection is gone without a word (a stalled network closes nothing,
    so no error ever arrives). None when statement_timeout is off: then nothing bounds a call."""
    if config.db_statement_timeout <= 0:
        return None
    return config.db_statement_timeout / 1000 + INFLIGHT_GRACE_S


def ssl_mode(use_ssl: bool, reject_unauthorized: bool) -> str | bool:
    """asyncpg's `ssl` for PG_USE_SSL / PG_SSL_REJECT_UNAUTHORIZED (the broker's and the proxy's
    databases alike): a certificate is verified unless the operator said not to."""
    if not use_ssl:
        return False
    return "verify-full" if reject_unauthorized else "require"


@dataclass(frozen=True)
class ConnectParams:
    host: str
    port: int
    user: str
    password: str
    database: str
    ssl: str | bool
    connect_timeout_s: float
    server_settings: Mapping[str, str] = field(default_factory=dict)
    call_deadline_s: float | None = None

    @classmethod
    def from_config(cls, config: Config, application_name: str) -> ConnectParams:
        assert config.pg_host is not None, "the embedded cluster must be started first"
        return cls(
            host=config.pg_host,
            port=config.pg_port,
            user=config.pg_user,
            password=config.pg_password,
            database=config.pg_db,
            ssl=ssl_mode(config.pg_use_ssl, config.pg_ssl_reject_unauthorized),
            connect_timeout_s=config.db_connection_timeout / 1000,
            call_deadline_s=call_deadline_s(config),
            server_settings={
                "application_name": application_name,
                "statement_timeout": str(config.db_statement_timeout),
                "lock_timeout": str(config.db_lock_timeout),
                "idle_in_transaction_session_timeout": str(config.db_idle_timeout),
                "timezone": "UTC",
                # Read by queen.pop_byte_budget (sql/functions/05_pop.sql).
                "queen.pop_max_bytes": str(config.pop_max_bytes),
                # Read by queen.push_batch (sql/functions/04_push.sql): refuse plaintext for a
                # queue with encryptionEnabled, unless the operator allowed it without a key.
                "queen.encryption_guard": "off"
                if config.encryption_allow_plaintext and not config.encryption_key
                else "on",
            },
        )


def _encode_json(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=_encode_json,
            decoder=orjson.loads,
            schema="pg_catalog",
            format="text",
        )


async def connect(
    params: ConnectParams, *, command_timeout_s: float | None = None
) -> asyncpg.Connection:
    """Open one connection with queen's session settings and JSON codecs.
    `command_timeout_s` is asyncpg's default for calls given no timeout of their own."""
    conn = await asyncpg.connect(
        host=params.host,
        port=params.port,
        user=params.user,
        password=params.password,
        database=params.database,
        ssl=params.ssl,
        timeout=params.connect_timeout_s,
        server_settings=dict(params.server_settings),
        statement_cache_size=256,
        command_timeout=command_timeout_s,
    )
    try:
        await _init_connection(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


class ConnectionRunner:
    """One bare connection as a `Runner`. Errors reach the caller as asyncpg raised them: these
    sessions are not request paths, and their callers log whatever went wrong."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def call(
        self, sql: str, *args: Any, kind: CallKind = "fetch", timeout_s: float | None = None
    ) -> Any:
        return await getattr(self.conn, kind)(sql, *args, timeout=timeout_s)


async def on_own_connection(
    params: ConnectParams, work: Callable[[ConnectionRunner], Awaitable[T]]
) -> T:
    """Run `work` on a connection opened for it and closed after it. Closing also ends whatever
    the session held (a session advisory lock) if `work` fails or is cancelled halfway."""
    conn = await connect(params)
    try:
        result = await work(ConnectionRunner(conn))
        await conn.close()
    finally:
        if not conn.is_closed():
            conn.terminate()
    return result
