"""Fixtures of the fault tests: clusters a test may stop, restart or break on its own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from queen.storage.pgcluster import PgCluster
from tests.support import start_test_cluster


@pytest.fixture
def dedicated_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL of this test alone (it is stopped and restarted on the same port)."""
    cluster = start_test_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.data_dir.parent, ignore_errors=True)
