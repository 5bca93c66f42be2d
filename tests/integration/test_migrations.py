"""Schema migrations against a real PostgreSQL: applied once, exactly once when several instances
start together, and refused, with one clear line and no traceback, when the database does not
match the files (an edited released migration, a newer schema, a schema made by someone else)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from queen.storage import migrations
from queen.storage.migrations import MigrationError
from queen.storage.pgcluster import PgCluster
from tests.support import (
    ServerProcess,
    create_database,
    descendants,
    run_sql,
    server_env,
    still_running,
)

SHIPPED = [m.version for m in migrations.available()]


@pytest.fixture
def fresh_database(pg_cluster: PgCluster) -> str:
    return create_database(pg_cluster, prefix="queen_migrations")


def queen_migrate(cluster: PgCluster, database: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queen", "migrate"],
        env={**os.environ, **server_env(cluster, database)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def recorded(cluster: PgCluster, database: str) -> list[dict[str, Any]]:
    rows = run_sql(
        cluster,
        "SELECT version, name, checksum, applied_at FROM queen.schema_migrations ORDER BY 1",
        database=database,
    )
    return [dict(row) for row in rows]


async def _connect(cluster: PgCluster, database: str) -> asyncpg.Connection:
    parts = {**cluster.dsn_parts(), "database": database}
    return await asyncpg.connect(**parts)


def migrate_directly(cluster: PgCluster, database: str) -> list[migrations.Migration]:
    async def go() -> list[migrations.Migration]:
        conn = await _connect(cluster, database)
        try:
            return await migrations.migrate(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


def assert_refused_in_one_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "[error]" in line]
    assert len(errors) == 1, result.stderr
    assert "migration refused" in errors[0]
    for fragment in fragments:
        assert fragment in errors[0]


def test_queen_migrate_applies_the_schema_once(pg_cluster: PgCluster, fresh_database: str) -> None:
    first = queen_migrate(pg_cluster, fresh_database)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("applied migration") == len(SHIPPED)
    rows = recorded(pg_cluster, fresh_database)
    assert [row["version"] for row in rows] == SHIPPED
    assert [row["checksum"] for row in rows] == [m.checksum for m in migrations.available()]

    second = queen_migrate(pg_cluster, fresh_database)
    assert second.returncode == 0, second.stderr
    assert "applied migration" not in second.stderr
    assert recorded(pg_cluster, fresh_database) == rows


def test_concurrent_migrations_apply_each_version_exactly_once(
    pg_cluster: PgCluster, fresh_database: str
) -> None:
    async def race() -> list[list[migrations.Migration]]:
        connections = [await _connect(pg_cluster, fresh_database) for _ in range(4)]
        try:
            return list(await asyncio.gather(*(migrations.migrate(c) for c in connections)))
        finally:
            for conn in connections:
                await conn.close()

    outcomes = asyncio.run(race())
    applied = sorted(m.version for outcome in outcomes for m in outcome)
    assert applied == SHIPPED  # every version by exactly one of the four
    assert [row["version"] for row in recorded(pg_cluster, fresh_database)] == SHIPPED


def test_edited_released_migration_is_refused(pg_cluster: PgCluster, fresh_database: str) -> None:
    migrate_directly(pg_cluster, fresh_database)
    run_sql(
        pg_cluster,
        "UPDATE queen.schema_migrations SET checksum = 'edited' WHERE version = $1",
        SHIPPED[0],
        database=fresh_database,
    )
    with pytest.raises(MigrationError, match=r"001_\w+\.sql changed after it was applied"):
        migrate_directly(pg_cluster, fresh_database)
    assert_refused_in_one_line(queen_migrate(pg_cluster, fresh_database), "changed")


@pytest.mark.timeout(60)
def test_serve_refuses_to_start_on_an_edited_migration(
    pg_cluster: PgCluster, fresh_database: str
) -> None:
    migrate_directly(pg_cluster, fresh_database)
    run_sql(
        pg_cluster,
        "UPDATE queen.schema_migrations SET checksum = 'edited' WHERE version = $1",
        SHIPPED[-1],
        database=fresh_database,
    )
    server = ServerProcess(server_env(pg_cluster, fresh_database)).start(wait_healthy=False)
    try:
        assert server.process is not None
        assert server.process.wait(30) == 1
        log = server.log()
        assert "migration refused" in log
        assert "Traceback" not in log
        assert "worker serving" not in log
        assert ServerProcess.scan_workers(server.pid) == []
    finally:
        server.stop()


def test_database_migrated_by_a_newer_queen_is_refused(
    pg_cluster: PgCluster, fresh_database: str
) -> None:
    migrate_directly(pg_cluster, fresh_database)
    run_sql(
        pg_cluster,
        "INSERT INTO queen.schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')",
        database=fresh_database,
    )
    with pytest.raises(MigrationError, match=r"\[999\].*newer version"):
        migrate_directly(pg_cluster, fresh_database)
    assert_refused_in_one_line(queen_migrate(pg_cluster, fresh_database), "999")


def test_failing_migration_is_refused_naming_its_file_and_leaves_nothing_half_done(
    pg_cluster: PgCluster, fresh_database: str
) -> None:
    """A `queen` schema made by something else (the original server's tables, say)."""
    run_sql(pg_cluster, "CREATE SCHEMA queen", database=fresh_database)
    run_sql(pg_cluster, "CREATE TABLE queen.queues (id int)", database=fresh_database)
    first = migrations.available()[0]
    result = queen_migrate(pg_cluster, fresh_database)
    assert_refused_in_one_line(result, f"{first.version:03d}_{first.name}.sql failed")
    assert recorded(pg_cluster, fresh_database) == []
    columns = run_sql(
        pg_cluster,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'queen' AND table_name = 'queues'",
        database=fresh_database,
    )
    assert [row["column_name"] for row in columns] == ["id"]  # rolled back, untouched


@pytest.mark.timeout(90)
def test_refusal_found_once_postgresql_comes_up_stops_the_running_server(
    own_cluster: PgCluster,
) -> None:
    """queen started while PostgreSQL was down (workers already serving 503); when the database
    appears with an edited migration, the whole server stops instead of serving a wrong schema."""
    database = create_database(own_cluster)
    migrate_directly(own_cluster, database)
    run_sql(
        own_cluster,
        "UPDATE queen.schema_migrations SET checksum = 'edited' WHERE version = $1",
        SHIPPED[0],
        database=database,
    )
    own_cluster.stop()
    server = ServerProcess(server_env(own_cluster, database)).start(wait_healthy=False)
    try:
        server.wait_health(503, timeout_s=30.0)
        tree = descendants(server.pid)
        own_cluster.start()
        assert server.process is not None
        assert server.process.wait(30) == 1
        log = server.log()
        assert "migration refused" in log
        assert "Traceback" not in log
        assert still_running(tree) == []
    finally:
        server.stop()
