"""A database that is busy rather than broken, seen by a client of the admin routes: a lock
timeout, a statement timeout or a deadlock the request lost is a 503 with Retry-After and a JSON
error naming what happened, never a 500; nothing of the request was done, and the same request
succeeds once the other session lets go.

The other session is the test's own, holding locks from a thread (asyncpg needs asyncio).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from queen.storage.pgcluster import PgCluster
from tests.integration.api import unique
from tests.support import (
    ServerProcess,
    running_server,
    sessions_waiting_for_a_lock,
    wait_until,
)

NEVER_MS = "3600000"
Statement = Callable[..., "concurrent.futures.Future[Any]"]


@pytest.fixture(scope="module")
def lock_timeout_server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(
        pg_cluster,
        database,
        DB_LOCK_TIMEOUT="300",
        RETENTION_INTERVAL=NEVER_MS,
        EVICTION_INTERVAL=NEVER_MS,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def statement_timeout_server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    """No lock timeout: a lock wait ends at the statement timeout, or in deadlock detection
    (deadlock_timeout is 1 s, well inside the statement timeout)."""
    with running_server(
        pg_cluster,
        database,
        DB_LOCK_TIMEOUT="0",
        DB_STATEMENT_TIMEOUT="3000",
        RETENTION_INTERVAL=NEVER_MS,
        EVICTION_INTERVAL=NEVER_MS,
    ) as server:
        yield server


@contextlib.contextmanager
def other_session(cluster: PgCluster, database: str) -> Iterator[Statement]:
    """A transaction of the test's own; each statement given to the yielded function starts at
    once and answers a future, so the test can go on while it waits for a lock. Leaving the block
    ends the session, rolling the transaction back. The loop is a plain asyncio one whatever
    event-loop policy trio-asyncio installed in this process."""
    loop = asyncio.SelectorEventLoop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def submit(coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    conn: asyncpg.Connection = submit(
        asyncpg.connect(**{**cluster.dsn_parts(), "database": database})
    ).result(10)
    try:
        # Deadlock detection must pick the server's session, which starts waiting first.
        submit(conn.execute("BEGIN; SET LOCAL deadlock_timeout = '60s'")).result(10)
        yield lambda sql, *args: submit(conn.execute(sql, *args))
    finally:
        loop.call_soon_threadsafe(conn.terminate)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def configure(server: ServerProcess) -> str:
    queue = unique("busy")
    response = httpx.post(f"{server.url}/api/v1/configure", json={"queue": queue}, timeout=10)
    assert response.status_code == 200, response.text
    return queue


def assert_retry_later(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": f"Service unavailable: database {reason}, retry later"}


@pytest.mark.timeout(60)
def test_a_lock_timeout_on_a_listing_is_a_503_to_retry(
    lock_timeout_server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    url = f"{lock_timeout_server.url}/api/v1/resources/queues"
    with other_session(pg_cluster, database) as run:
        run("LOCK TABLE queen.queues IN ACCESS EXCLUSIVE MODE").result(10)
        assert_retry_later(httpx.get(url, timeout=20), "lock timeout")
    assert httpx.get(url, timeout=20).status_code == 200


@pytest.mark.timeout(60)
def test_a_lock_timeout_on_a_delete_changes_nothing(
    lock_timeout_server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    queue = configure(lock_timeout_server)
    url = f"{lock_timeout_server.url}/api/v1/resources/queues/{queue}"
    with other_session(pg_cluster, database) as run:
        run("SELECT 1 FROM queen.queues WHERE name = $1 FOR UPDATE", queue).result(10)
        assert_retry_later(httpx.delete(url, timeout=20), "lock timeout")
    assert httpx.get(url, timeout=20).status_code == 200, "the queue is still there"
    response = httpx.delete(url, timeout=20)
    assert response.status_code == 200
    assert response.json()["existed"] is True


@pytest.mark.timeout(60)
def test_a_statement_timeout_is_a_503_to_retry(
    statement_timeout_server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    url = f"{statement_timeout_server.url}/api/v1/resources/queues"
    with other_session(pg_cluster, database) as run:
        run("LOCK TABLE queen.queues IN ACCESS EXCLUSIVE MODE").result(10)
        assert_retry_later(httpx.get(url, timeout=20), "statement timeout")
    assert httpx.get(url, timeout=20).status_code == 200


@pytest.mark.timeout(60)
def test_a_deadlock_the_request_lost_is_a_503_and_changes_nothing(
    statement_timeout_server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """queen.delete_queue clears the queue's consumer watermarks before it deletes the queue row.
    The test's session holds that row; once the delete waits for it, the session asks for the
    watermarks table the delete already holds: each waits for the other."""
    queue = configure(statement_timeout_server)
    url = f"{statement_timeout_server.url}/api/v1/resources/queues/{queue}"
    with (
        other_session(pg_cluster, database) as run,
        concurrent.futures.ThreadPoolExecutor(max_workers=1) as client,
    ):
        run("SELECT 1 FROM queen.queues WHERE name = $1 FOR UPDATE", queue).result(10)
        deleting = client.submit(httpx.delete, url, timeout=20)
        wait_until(
            lambda: sessions_waiting_for_a_lock(pg_cluster, database, "queen-%") >= 1,
            10.0,
            "the delete to wait",
        )
        locking = run("LOCK TABLE queen.consumer_watermarks IN SHARE MODE")
        assert_retry_later(deleting.result(20), "deadlock")
        locking.result(10)  # the delete rolled back: the session got its lock
    assert httpx.get(url, timeout=20).status_code == 200, "the queue is still there"
