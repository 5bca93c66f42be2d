from __future__ import annotations

from collections.abc import Iterator

import pytest

from queen.storage.pgcluster import PgCluster
from tests.proxy.support import ProxyProcess, create_user, proxy_env, running_proxy
from tests.support import ServerProcess, create_database, running_server


@pytest.fixture(scope="package")
def proxied_broker(pg_cluster: PgCluster) -> Iterator[tuple[PgCluster, str, ServerProcess]]:
    """One broker (its own auth off) for the proxy tests, on a database it shares with the proxy
    tables; started once for the package: the proxy's behaviour, not the broker's, is on test."""
    database = create_database(pg_cluster, "queen_proxy_test")
    with running_server(pg_cluster, database) as server:
        yield pg_cluster, database, server


@pytest.fixture(scope="package")
def proxy(proxied_broker: tuple[PgCluster, str, ServerProcess]) -> Iterator[ProxyProcess]:
    """A proxy in front of that broker, with one user per role (named admin, read_write,
    read_only; password tests.proxy.support.PASSWORD)."""
    cluster, database, server = proxied_broker
    env = proxy_env(cluster, database, server.url)
    for role in ("admin", "read-write", "read-only"):
        create_user(env, role.replace("-", "_"), role)
    with running_proxy(env) as process:
        yield process
