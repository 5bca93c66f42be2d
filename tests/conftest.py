from __future__ import annotations

from collections.abc import Iterator

import pytest

from queen.storage.pgcluster import PgCluster
from tests.support import (
    ServerProcess,
    create_database,
    remove_test_cluster,
    running_server,
    start_test_cluster,
)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = start_test_cluster()
    try:
        yield cluster
    finally:
        remove_test_cluster(cluster)


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of the test's own, for tests that stop or break PostgreSQL (about 1 s to start)."""
    cluster = start_test_cluster()
    try:
        yield cluster
    finally:
        remove_test_cluster(cluster)


@pytest.fixture(scope="module")
def database(pg_cluster: PgCluster) -> str:
    return create_database(pg_cluster)


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    """One real server per test module, on its own database."""
    with running_server(pg_cluster, database) as process:
        yield process
