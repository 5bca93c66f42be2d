"""The schema against a real PostgreSQL: created once, exactly once when several instances start
together; a database of the previous release upgraded to exactly what a fresh one gets, with every
function signature an instance of that release calls still there; an edited function file
re-applied; a newer schema left alone; and refusals, in one clear line with no traceback, when the
database does not match the files (an edited released migration, a schema made by someone else)."""

from __future__ import annotations

import asyncio
import difflib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from queen import __version__
from queen.storage import migrations
from queen.storage.migrations import MigrationError, Outcome, SqlTree
from queen.storage.pgcluster import PgCluster
from tests.support import (
    REPO,
    ServerProcess,
    create_database,
    descendants,
    run_sql,
    server_env,
    still_running,
)

# The git revision whose `queen migrate` built the databases this release upgrades: the last
# commit of the pre-release files 001-010. After a release, its tag.
PREVIOUS_RELEASE = "39eaa99"
# A function the previous release marked with a comment starting so is a wrapper kept for one
# release; it may be gone now. Any other signature of the previous release must still exist.
COMPAT_MARK = "compat:"

SHIPPED = migrations.shipped()
EVERY_FILE = [f.path for f in (*SHIPPED.schema, *SHIPPED.functions)]


@pytest.fixture
def fresh_database(pg_cluster: PgCluster) -> str:
    return create_database(pg_cluster, prefix="queen_migrations")


@pytest.fixture(scope="module")
def previous_release(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database migrated by the previous release's own code, to copy from (CREATE DATABASE
    ... TEMPLATE)."""
    source = export_revision(PREVIOUS_RELEASE, tmp_path_factory.mktemp("previous-release"))
    database = create_database(pg_cluster, prefix="queen_previous")
    result = queen_migrate(pg_cluster, database, PYTHONPATH=str(source), cwd=source)
    assert result.returncode == 0, result.stderr
    return database


def export_revision(revision: str, target: Path) -> Path:
    """The `queen` package of `revision`, laid out so that `python -m queen` run with it first on
    the path imports it, its SQL and its version (package metadata) instead of this checkout's."""
    paths = ["queen", "sql", "pyproject.toml"]
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, *paths],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"git revision {revision} is needed to build the previous release's database "
            f"(a shallow clone lacks it): {archive.stderr.decode().strip()}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    (target / "sql").rename(target / "queen" / "sql")
    version = tomllib.loads((target / "pyproject.toml").read_text())["project"]["version"]
    metadata = target / f"queen-{version}.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(f"Metadata-Version: 2.1\nName: queen\nVersion: {version}\n")
    return target


def copy_of(cluster: PgCluster, template: str) -> str:
    name = f"queen_upgrade_{uuid.uuid4().hex[:10]}"
    run_sql(cluster, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


def queen_migrate(
    cluster: PgCluster, database: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queen", "migrate"],
        env={**os.environ, **server_env(cluster, database), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def migrate_directly(cluster: PgCluster, database: str, tree: SqlTree | None = None) -> Outcome:
    async def go() -> Outcome:
        conn = await _connect(cluster, database)
        try:
            return await migrations.migrate(conn, tree)
        finally:
            await conn.close()

    return asyncio.run(go())


async def _connect(cluster: PgCluster, database: str) -> asyncpg.Connection:
    parts = {**cluster.dsn_parts(), "database": database}
    return await asyncpg.connect(**parts)


def tree_with(root: Path, release: str, files: Mapping[str, str]) -> SqlTree:
    """The shipped SQL copied under `root`, with `files` (path inside it -> text) written over."""
    copy = root / f"sql-{release}"
    shutil.copytree(REPO / "sql", copy)
    for path, text in files.items():
        (copy / path).write_text(text)
    return SqlTree.load(copy, release=release)


def schema_dump(cluster: PgCluster, database: str) -> str:
    """`pg_dump -s`, less the per-run random key of its \\restrict lines."""
    parts = cluster.dsn_parts()
    target = f"host={parts['host']} port={parts['port']} user={parts['user']} dbname={database}"
    dump = subprocess.run(
        [str(cluster.bindir / "pg_dump"), "--schema-only", "--no-owner", "-d", target],
        env={**os.environ, "PGPASSWORD": str(parts["password"])},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = dump.splitlines()
    return "\n".join(line for line in lines if not line.startswith(("\\restrict", "\\unrestrict")))


def assert_same_schema(actual: str, expected: str) -> None:
    diff = list(difflib.unified_diff(expected.splitlines(), actual.splitlines(), lineterm=""))
    assert diff == [], "\n".join(diff[:200])


def signatures(cluster: PgCluster, database: str) -> dict[str, tuple[str, str]]:
    """Every function and procedure of schema queen -> (its result type, its comment)."""
    rows = run_sql(
        cluster,
        "SELECT p.oid::regprocedure::text AS signature, pg_get_function_result(p.oid) AS result,"
        " coalesce(obj_description(p.oid, 'pg_proc'), '') AS comment"
        " FROM pg_proc p WHERE p.pronamespace = 'queen'::regnamespace",
        database=database,
    )
    return {row["signature"]: (row["result"] or "", row["comment"]) for row in rows}


def function_source(cluster: PgCluster, database: str, name: str) -> str:
    rows = run_sql(
        cluster,
        "SELECT prosrc FROM pg_proc WHERE pronamespace = 'queen'::regnamespace AND proname = $1",
        name,
        database=database,
    )
    return str(rows[0]["prosrc"])


def schema_version(cluster: PgCluster, database: str) -> dict[str, Any]:
    rows = run_sql(
        cluster, "SELECT release, functions::text FROM queen.schema_version", database=database
    )
    assert len(rows) == 1
    return {"release": rows[0]["release"], "functions": json.loads(rows[0]["functions"])}


def assert_refused_in_one_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "[error]" in line]
    assert len(errors) == 1, result.stderr
    assert "migration refused" in errors[0]
    for fragment in fragments:
        assert fragment in errors[0]


def record_unknown_migration(cluster: PgCluster, database: str) -> None:
    run_sql(
        cluster,
        "INSERT INTO queen.schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')",
        database=database,
    )


def test_queen_migrate_creates_the_schema_once(pg_cluster: PgCluster, fresh_database: str) -> None:
    first = queen_migrate(pg_cluster, fresh_database)
    assert first.returncode == 0, first.stderr
    assert "applied schema" in first.stderr
    recorded = schema_version(pg_cluster, fresh_database)
    assert recorded["release"] == __version__

    second = queen_migrate(pg_cluster, fresh_database)
    assert second.returncode == 0, second.stderr
    assert "applied schema" not in second.stderr
    assert schema_version(pg_cluster, fresh_database) == recorded


def test_database_of_the_previous_release_upgrades_to_exactly_the_fresh_schema(
    pg_cluster: PgCluster, previous_release: str, fresh_database: str
) -> None:
    upgraded = copy_of(pg_cluster, previous_release)
    result = queen_migrate(pg_cluster, upgraded)
    assert result.returncode == 0, result.stderr
    migrate_directly(pg_cluster, fresh_database)
    assert_same_schema(schema_dump(pg_cluster, upgraded), schema_dump(pg_cluster, fresh_database))
    assert schema_version(pg_cluster, upgraded) == schema_version(pg_cluster, fresh_database)
    assert migrate_directly(pg_cluster, upgraded).applied == ()


def test_every_function_signature_of_the_previous_release_survives_the_upgrade(
    pg_cluster: PgCluster, previous_release: str
) -> None:
    """An instance of the previous release keeps working against the upgraded database."""
    before = signatures(pg_cluster, previous_release)
    upgraded = copy_of(pg_cluster, previous_release)
    migrate_directly(pg_cluster, upgraded)
    after = signatures(pg_cluster, upgraded)
    kept = {sig: result for sig, (result, _) in before.items()}
    retired = {sig for sig, (_, comment) in before.items() if comment.startswith(COMPAT_MARK)}
    missing = sorted(set(kept) - set(after) - retired)
    assert missing == [], f"signatures of the previous release dropped: {missing}"
    changed = sorted(sig for sig in set(kept) & set(after) if after[sig][0] != kept[sig])
    assert changed == [], f"result types changed: {changed}"


def test_a_forward_migration_takes_a_database_to_the_next_release(
    pg_cluster: PgCluster, fresh_database: str, tmp_path: Path
) -> None:
    """A table change is written twice, as a migration and in schema/; both give one schema."""
    migrate_directly(pg_cluster, fresh_database)
    change = "ALTER TABLE queen.queues ADD COLUMN note text;\n"
    # The number after the shipped migrations.
    version = max((m.version for m in SHIPPED.migrations), default=10) + 1
    name = f"migrations/{version:03d}_queue_note.sql"
    table = (REPO / "sql/schema/01_queues.sql").read_text()
    next_release = tree_with(
        tmp_path,
        "99.0.0",
        {
            name: change,
            "schema/01_queues.sql": table.replace(
                "    updated_at timestamptz NOT NULL DEFAULT now()\n",
                "    updated_at timestamptz NOT NULL DEFAULT now(),\n    note text\n",
            ),
        },
    )
    outcome = migrate_directly(pg_cluster, fresh_database, next_release)
    assert outcome.applied == (name,)
    created = create_database(pg_cluster)
    assert migrate_directly(pg_cluster, created, next_release).applied == tuple(EVERY_FILE)
    assert_same_schema(schema_dump(pg_cluster, fresh_database), schema_dump(pg_cluster, created))
    for database in (fresh_database, created):
        versions = run_sql(
            pg_cluster, "SELECT version FROM queen.schema_migrations", database=database
        )
        assert sorted(row["version"] for row in versions) == [
            *(m.version for m in SHIPPED.migrations),
            version,
        ]

    edited = tree_with(tmp_path / "edited", "99.0.0", {name: change + "--"})
    with pytest.raises(MigrationError, match=rf"{version:03d}_queue_note\.sql changed after"):
        migrate_directly(pg_cluster, created, edited)


def test_an_edited_function_file_is_re_applied_on_an_existing_database(
    pg_cluster: PgCluster, fresh_database: str, tmp_path: Path
) -> None:
    migrate_directly(pg_cluster, fresh_database)
    path = "functions/01_common.sql"
    text = (REPO / "sql" / path).read_text()
    body = "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
    assert text.count(body) == 1
    edited = tree_with(tmp_path, __version__, {path: text.replace(body, body + " -- edited")})

    outcome = migrate_directly(pg_cluster, fresh_database, edited)
    assert outcome.applied == tuple(f.path for f in SHIPPED.functions)
    assert "-- edited" in function_source(pg_cluster, fresh_database, "ts_ms")
    assert schema_version(pg_cluster, fresh_database)["functions"] == edited.function_checksums()
    assert migrate_directly(pg_cluster, fresh_database, edited).applied == ()


def test_concurrent_starters_create_the_schema_exactly_once(
    pg_cluster: PgCluster, fresh_database: str
) -> None:
    async def race() -> list[Outcome]:
        connections = [await _connect(pg_cluster, fresh_database) for _ in range(4)]
        try:
            return list(await asyncio.gather(*(migrations.migrate(c) for c in connections)))
        finally:
            for conn in connections:
                await conn.close()

    outcomes = asyncio.run(race())
    assert sorted(outcome.applied for outcome in outcomes) == [(), (), (), tuple(EVERY_FILE)]
    assert schema_version(pg_cluster, fresh_database)["release"] == __version__


def test_a_schema_migrated_by_a_newer_release_is_left_alone(
    pg_cluster: PgCluster, fresh_database: str, tmp_path: Path
) -> None:
    """An instance of this release starting during a rolling upgrade runs against the newer
    schema and never puts its own, older functions back."""
    path = "functions/01_common.sql"
    text = (REPO / "sql" / path).read_text()
    newer = tree_with(tmp_path, "99.0.0", {path: text + "\n-- changed by 99.0.0\n"})
    migrate_directly(pg_cluster, fresh_database, newer)
    before = schema_dump(pg_cluster, fresh_database)

    result = queen_migrate(pg_cluster, fresh_database)
    assert result.returncode == 0, result.stderr
    assert "schema left alone" in result.stderr
    assert_same_schema(schema_dump(pg_cluster, fresh_database), before)
    assert schema_version(pg_cluster, fresh_database)["release"] == "99.0.0"


def test_a_migration_this_release_does_not_know_is_refused(
    pg_cluster: PgCluster, fresh_database: str
) -> None:
    migrate_directly(pg_cluster, fresh_database)
    record_unknown_migration(pg_cluster, fresh_database)
    with pytest.raises(MigrationError, match=r"\[999\].*newer version"):
        migrate_directly(pg_cluster, fresh_database)
    assert_refused_in_one_line(queen_migrate(pg_cluster, fresh_database), "999")


def test_an_unfinished_pre_release_chain_is_refused(
    pg_cluster: PgCluster, fresh_database: str
) -> None:
    run_sql(pg_cluster, "CREATE SCHEMA queen", database=fresh_database)
    run_sql(
        pg_cluster,
        "CREATE TABLE queen.schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
        " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        database=fresh_database,
    )
    run_sql(
        pg_cluster,
        "INSERT INTO queen.schema_migrations (version, name, checksum)"
        " SELECT v, 'pre_release', 'x' FROM generate_series(1, 8) v",
        database=fresh_database,
    )
    assert_refused_in_one_line(queen_migrate(pg_cluster, fresh_database), "1-10")


@pytest.mark.timeout(60)
def test_serve_refuses_to_start_on_a_refused_migration(
    pg_cluster: PgCluster, fresh_database: str
) -> None:
    migrate_directly(pg_cluster, fresh_database)
    record_unknown_migration(pg_cluster, fresh_database)
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


def test_a_schema_made_by_someone_else_is_refused_naming_the_file_and_left_untouched(
    pg_cluster: PgCluster, fresh_database: str
) -> None:
    """A `queen` schema made by something else (the original server's tables, say)."""
    run_sql(pg_cluster, "CREATE SCHEMA queen", database=fresh_database)
    run_sql(pg_cluster, "CREATE TABLE queen.queues (id int)", database=fresh_database)
    result = queen_migrate(pg_cluster, fresh_database)
    assert_refused_in_one_line(result, f"{SHIPPED.schema[0].path} failed")
    tables = run_sql(
        pg_cluster,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'queen'",
        database=fresh_database,
    )
    assert [tuple(row) for row in tables] == [("queues", "id")]  # rolled back, untouched


@pytest.mark.timeout(90)
def test_refusal_found_once_postgresql_comes_up_stops_the_running_server(
    own_cluster: PgCluster,
) -> None:
    """queen started while PostgreSQL was down (workers already serving 503); when the database
    appears with a schema it must refuse, the whole server stops instead of serving it."""
    database = create_database(own_cluster)
    migrate_directly(own_cluster, database)
    record_unknown_migration(own_cluster, database)
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
