"""The proxy in front of a broker with its own JWT auth on (HS256, the shared JWT_SECRET): the
token the proxy mints per request is accepted, and its `sub` (the proxy user's id) is stamped as
producerSub, which the original pairing could not do (spec §4.15, D-P8)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from queen.storage.pgcluster import PgCluster
from tests.proxy.support import SECRET, ProxyProcess, create_user, login, proxy_env, running_proxy
from tests.support import run_sql, running_server


@pytest.fixture(scope="module")
def guarded_proxy(pg_cluster: PgCluster, database: str) -> Iterator[ProxyProcess]:
    broker_env = {"JWT_ENABLED": "true", "JWT_ALGORITHM": "HS256", "JWT_SECRET": SECRET}
    with running_server(pg_cluster, database, **broker_env) as broker:
        env = proxy_env(pg_cluster, database, broker.url)
        create_user(env, "producer", "read-write")
        with running_proxy(env) as proxy:
            yield proxy


def test_minted_tokens_pass_the_broker_and_stamp_producer_sub(
    guarded_proxy: ProxyProcess, pg_cluster: PgCluster, database: str
) -> None:
    cookie = login(guarded_proxy.url, "producer")
    headers = {"Cookie": f"token={cookie}", "Sec-Fetch-Site": "same-origin"}
    queue = f"stamped_{uuid.uuid4().hex[:8]}"
    pushed = httpx.post(
        f"{guarded_proxy.url}/api/v1/push",
        headers=headers,
        json={"items": [{"queue": queue, "payload": {"n": 1}, "producerSub": "forged"}]},
        timeout=10,
    )
    assert pushed.status_code == 201, pushed.text
    popped = httpx.get(
        f"{guarded_proxy.url}/api/v1/pop/queue/{queue}?wait=false", headers=headers, timeout=10
    )
    assert popped.status_code == 200, popped.text
    (user,) = run_sql(
        pg_cluster,
        "SELECT id FROM queen_proxy.users WHERE username = 'producer'",
        database=database,
    )
    assert popped.json()["messages"][0]["producerSub"] == str(user["id"])
