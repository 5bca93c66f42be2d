from __future__ import annotations

from collections.abc import Iterator

import pytest

from queen.storage.pgcluster import PgCluster
from tests.proxy.support import ProxyProcess, create_user, proxy_env, running_proxy
from tests.support import ServerProcess


@pytest.fixture(scope="module")
def proxy_env_base(pg_cluster: PgCluster, database: str, server: ServerProcess) -> dict[str, str]:
    """The proxy's environment: its tables beside the broker's, in the module's database."""
    return proxy_env(pg_cluster, database, server.url)


@pytest.fixture(scope="module")
def proxy(proxy_env_base: dict[str, str]) -> Iterator[ProxyProcess]:
    """A proxy in front of the module's broker (whose own auth is off), with one user per role."""
    for role in ("admin", "read-write", "read-only"):
        create_user(proxy_env_base, role.replace("-", "_"), role)
    with running_proxy(proxy_env_base) as process:
        yield process
