"""Versioned schema migrations: `sql/NNN_name.sql` files applied in order, each in its own
transaction, recorded in `queen.schema_migrations` with a checksum.

Several workers or server instances may start at once; a session advisory lock serialises them, so
exactly one applies a pending file and the others then see it recorded. An applied file whose text
changed is refused: released migrations are immutable, a change is a new numbered file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger("queen.migrations")

_LOCK_KEY = 0x5155454E  # "QUEN": one advisory lock id for all queen migrations
_FILE_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database holds a schema this code cannot safely migrate."""


# Failures that say nothing about the migration itself: the caller may retry once the server is
# back. Any other PostgreSQL error while applying a file will recur on every retry, so it is
# reported as a MigrationError instead of being retried forever as "unreachable".
_SERVER_GONE = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with this package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("queen.sql").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply what is pending; return what this call applied (empty when up to date)."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS queen;"
            "CREATE TABLE IF NOT EXISTS queen.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM queen.schema_migrations")
        applied = {row["version"]: row for row in rows}
        shipped = available()
        known = {m.version for m in shipped}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                f"the database has migrations {unknown} that this queen does not know; "
                "it was migrated by a newer version"
            )
        done: list[Migration] = []
        for migration in shipped:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:03d}_{migration.name}.sql changed after it "
                        "was applied; add a new migration instead of editing a released one"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO queen.schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except _SERVER_GONE:
                raise
            except asyncpg.PostgresError as error:
                raise MigrationError(
                    f"migration {migration.version:03d}_{migration.name}.sql failed: {error}"
                ) from error
            log.info(
                "applied migration",
                extra={"version": migration.version, "migration": migration.name},
            )
            done.append(migration)
        return done
    finally:
        if not conn.is_closed():  # a lost session has released its lock already
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
