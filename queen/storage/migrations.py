"""Keeps the `queen` schema of a database current at start-up (`queen serve`, `queen migrate`).

The SQL ships as package `queen.sql`: `schema/` holds the tables of this release and runs once, on
an empty database; `migrations/NNN_name.sql` bring the tables of a database made by an earlier
release forward, each once, recorded with a checksum and never edited after release;
`functions/` defines every stored function once (CREATE OR REPLACE), and all of those files are
re-applied whenever the text of any differs from what the database records.

A database records the release that last migrated it. An instance older than that leaves the
schema alone and runs against it (a release keeps the previous release's function signatures), so
a rolling upgrade never puts older functions back. Instances starting together queue on one
advisory lock, and everything one run changes commits in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from queen import __version__

log = logging.getLogger("queen.migrations")

_LOCK_KEY = 0x5155454E  # "QUEN": one advisory lock id for all queen migrations
_FILE_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
# Versions 1-10 were the pre-release files that built development and benchmark databases before
# 0.1.0. Their tables are exactly schema/ of 0.1.0, so such a database needs only the forward
# migrations and the function files; forward migrations are numbered after them.
_PRE_RELEASE_CHAIN = frozenset(range(1, 11))


class MigrationError(RuntimeError):
    """The database holds a schema this code cannot safely migrate."""


# Failures that say nothing about the SQL itself: the caller retries. The server went away, or
# the run collided with the running instances of a rolling upgrade (it locks what it replaces).
# Any other PostgreSQL error while applying a file will recur on every retry, so it is reported
# as a MigrationError instead of being retried forever.
_TRANSIENT = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
)


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SqlFile:
    """One file of the package, named by its path inside it (`functions/04_push.sql`)."""

    path: str
    sql: str

    @property
    def checksum(self) -> str:
        return _checksum(self.sql)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return _checksum(self.sql)

    @property
    def path(self) -> str:
        return f"migrations/{self.version:03d}_{self.name}.sql"


@dataclass(frozen=True)
class SqlTree:
    """The SQL of one release: what `migrate` brings a database to."""

    release: str
    bookkeeping: str
    schema: tuple[SqlFile, ...]
    migrations: tuple[Migration, ...]
    functions: tuple[SqlFile, ...]

    @classmethod
    def load(cls, root: Traversable, release: str = __version__) -> SqlTree:
        migrations = migrations_in(root / "migrations")
        versions = [m.version for m in migrations]
        if len(set(versions)) != len(versions):
            raise MigrationError(f"two migration files share a version: {versions}")
        if set(versions) & _PRE_RELEASE_CHAIN:
            raise MigrationError(f"migrations are numbered from 011 on, found {versions}")
        return cls(
            release=release,
            bookkeeping=(root / "bookkeeping.sql").read_text(),
            schema=_sql_files(root, "schema"),
            migrations=tuple(migrations),
            functions=_sql_files(root, "functions"),
        )

    def function_checksums(self) -> dict[str, str]:
        return {f.path: f.checksum for f in self.functions}


def shipped() -> SqlTree:
    """The SQL shipped with this package."""
    return SqlTree.load(resources.files("queen.sql"))


def available() -> list[Migration]:
    """The forward migrations shipped with this package, in version order."""
    return list(shipped().migrations)


def _sql_files(root: Traversable, folder: str) -> tuple[SqlFile, ...]:
    directory = root / folder
    entries = sorted(
        (e for e in directory.iterdir() if e.name.endswith(".sql")), key=lambda e: e.name
    )
    return tuple(SqlFile(f"{folder}/{e.name}", e.read_text()) for e in entries)


def migrations_in(directory: Traversable) -> list[Migration]:
    """The numbered migration files of `directory` (the broker's series, or the proxy's), in
    version order."""
    if not directory.is_dir():  # an installed package has no folder while no migration exists
        return []
    migrations = []
    for entry in directory.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            migrations.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(migrations, key=lambda migration: migration.version)


def _release_key(release: str) -> tuple[int, ...]:
    """Orders releases by their leading numbers ("0.10.0" after "0.9.1"); a source tree's
    "0.0.0+source" sorts before every release."""
    match = re.match(r"\d+(?:\.\d+)*", release)
    return tuple(int(part) for part in match.group(0).split(".")) if match else (0,)


@dataclass(frozen=True)
class Outcome:
    """What one `migrate` call found and did."""

    release: str  # the release whose schema the database now holds
    applied: tuple[str, ...]  # the files this call ran, in order; empty when up to date


@dataclass(frozen=True)
class _Recorded:
    release: str | None
    functions: dict[str, str]
    migrations: dict[int, str]  # version -> checksum


async def migrate(conn: asyncpg.Connection, tree: SqlTree | None = None) -> Outcome:
    """Bring the database to `tree` (the shipped SQL by default) in one transaction."""
    tree = tree or shipped()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(tree.bookkeeping)
        recorded = await _read(conn)
        if recorded.release and _release_key(recorded.release) > _release_key(tree.release):
            log.warning(
                "schema left alone: the database was migrated by a newer queen",
                extra={"schema_release": recorded.release, "release": tree.release},
            )
            return Outcome(recorded.release, ())
        applied: list[str] = []
        if recorded.release is None and not recorded.migrations:
            for file in tree.schema:
                await _run(conn, file.path, file.sql)
                applied.append(file.path)
            await _record_migrations(conn, tree.migrations)  # schema/ already contains them
        else:
            pending = await _pending(conn, tree, recorded)
            for migration in pending:
                await _run(conn, migration.path, migration.sql)
                applied.append(migration.path)
            await _record_migrations(conn, pending)
        functions = tree.function_checksums()
        if recorded.functions != functions:
            for file in tree.functions:
                await _run(conn, file.path, file.sql)
                applied.append(file.path)
        if applied or recorded.release != tree.release:
            # As text: the server's connections decode jsonb themselves, a plain one does not.
            await conn.execute(
                "INSERT INTO queen.schema_version (release, functions) VALUES ($1, $2::text::jsonb)"
                " ON CONFLICT (singleton) DO UPDATE SET release = EXCLUDED.release,"
                " functions = EXCLUDED.functions, migrated_at = now()",
                tree.release,
                json.dumps(functions),
            )
    if applied:
        log.info("applied schema", extra={"release": tree.release, "files": applied})
    return Outcome(tree.release, tuple(applied))


async def _read(conn: asyncpg.Connection) -> _Recorded:
    version = await conn.fetchrow("SELECT release, functions::text FROM queen.schema_version")
    rows = await conn.fetch("SELECT version, checksum FROM queen.schema_migrations")
    return _Recorded(
        release=version["release"] if version else None,
        functions=json.loads(version["functions"]) if version else {},
        migrations={row["version"]: row["checksum"] for row in rows},
    )


async def _pending(
    conn: asyncpg.Connection, tree: SqlTree, recorded: _Recorded
) -> tuple[Migration, ...]:
    """The shipped migrations this database lacks, after checking the ones it has."""
    migrations = dict(recorded.migrations)
    if recorded.release is None:
        if set(migrations) != _PRE_RELEASE_CHAIN:
            raise MigrationError(
                f"the database holds pre-release migrations {sorted(migrations)} instead of all "
                "of 1-10; migrate it with commit 39eaa99 first, or recreate it"
            )
        # Its tables are schema/ of 0.1.0: the forward migrations take it on from there.
        await conn.execute("DELETE FROM queen.schema_migrations")
        migrations = {}
    shipped_versions = {m.version: m for m in tree.migrations}
    unknown = sorted(set(migrations) - set(shipped_versions))
    if unknown:
        raise MigrationError(
            f"the database has migrations {unknown} that this queen does not know; "
            "it was migrated by a newer version"
        )
    for version, checksum in migrations.items():
        migration = shipped_versions[version]
        if checksum != migration.checksum:
            raise MigrationError(
                f"{migration.path} changed after it was applied; "
                "add a new migration instead of editing a released one"
            )
    return tuple(m for m in tree.migrations if m.version not in migrations)


async def _record_migrations(conn: asyncpg.Connection, migrations: tuple[Migration, ...]) -> None:
    await conn.executemany(
        "INSERT INTO queen.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        [(m.version, m.name, m.checksum) for m in migrations],
    )


async def _run(conn: asyncpg.Connection, path: str, sql: str) -> None:
    try:
        await conn.execute(sql)
    except _TRANSIENT:
        raise
    except asyncpg.PostgresError as error:
        raise MigrationError(f"{path} failed: {error}") from error
