"""/health and the HTTP conventions every route shares, seen by a client of a real `queen serve`:
JSON errors, CORS on every answer, preflight on any path, and a health probe that follows
PostgreSQL going away and coming back without a restart of queen."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from queen import __version__
from queen.storage.pgcluster import PgCluster
from tests.integration.test_database_errors import other_session
from tests.support import (
    ServerProcess,
    create_database,
    running_server,
    schema_is_current,
    schema_state,
    server_env,
    sessions_waiting_for_a_lock,
    wait_until,
)

CORS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS",
    "access-control-allow-headers": "Content-Type, Authorization",
}


def test_health_answers_200_with_the_documented_keys(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "healthy"
    assert body["database"] == "connected"
    assert body["version"] == __version__
    assert body["worker_id"] == 0
    assert isinstance(body["server"], str) and body["server"]
    assert body["queen"] == {"worker_id": 0, "status": "active"}


# Other unknown paths are the dashboard's client-side routes (tests/integration/test_web.py).
@pytest.mark.parametrize("path", ["/api/nope", "/api/v1/nope", "/health/extra"])
def test_unknown_path_is_404_json(server: ServerProcess, path: str) -> None:
    response = httpx.get(f"{server.url}{path}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Not found"}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_wrong_method_is_405_json(server: ServerProcess, method: str) -> None:
    response = httpx.request(method, f"{server.url}/health")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Method not allowed"}
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET"}
    assert method not in response.headers["allow"]


@pytest.mark.parametrize("path", ["/health", "/api/v1/push", "/no/such/path", "/"])
def test_preflight_on_any_path_is_204_with_cors(server: ServerProcess, path: str) -> None:
    response = httpx.options(
        f"{server.url}{path}",
        headers={"Origin": "http://dashboard.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.content == b""
    assert {k: response.headers.get(k) for k in CORS} == CORS
    assert response.headers["access-control-max-age"] == "86400"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/health", None),
        ("GET", "/metrics", None),
        ("GET", "/nope", None),
        ("DELETE", "/health", None),
        ("OPTIONS", "/anything", None),
        ("POST", "/api/v1/push", b"{not json"),
    ],
)
def test_every_answer_carries_cors_headers(
    server: ServerProcess, method: str, path: str, body: bytes | None
) -> None:
    response = httpx.request(
        method, f"{server.url}{path}", content=body, headers={"Content-Type": "application/json"}
    )
    assert {k: response.headers.get(k) for k in CORS} == CORS, response.status_code


def test_malformed_json_is_400_naming_the_problem(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/api/v1/push",
        content=b'{"items": [',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error.startswith("Invalid JSON: ")
    assert len(error) > len("Invalid JSON: ")


@pytest.mark.timeout(60)
def test_health_follows_postgresql_down_and_back_up(own_cluster: PgCluster) -> None:
    database = create_database(own_cluster)
    server = ServerProcess(server_env(own_cluster, database)).start()
    try:
        workers = server.worker_pids()
        own_cluster.stop()
        server.wait_health(503, timeout_s=5.0)
        body = httpx.get(f"{server.url}/health", timeout=5.0).json()
        assert (body["status"], body["database"]) == ("unhealthy", "disconnected")

        own_cluster.start()  # same data directory, same port
        server.wait_health(200, timeout_s=15.0)
        assert server.worker_pids() == workers  # recovered in place, nothing restarted
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_server_started_before_postgresql_serves_once_it_comes_up(
    own_cluster: PgCluster,
) -> None:
    """queen starts without its database (503), then applies the schema when it appears."""
    database = create_database(own_cluster)
    own_cluster.stop()
    server = ServerProcess(server_env(own_cluster, database)).start(wait_healthy=False)
    try:
        server.wait_health(503, timeout_s=30.0)
        own_cluster.start()
        server.wait_health(200, timeout_s=30.0)
        wait_until(
            lambda: schema_is_current(schema_state(own_cluster, database)),
            timeout_s=5.0,
            what="the schema to be applied once PostgreSQL answers",
        )
    finally:
        server.stop()


@pytest.mark.timeout(90)
def test_health_answers_while_slow_listings_hold_every_admin_connection(
    pg_cluster: PgCluster,
) -> None:
    """Dashboard listings stuck behind a lock fill the admin pool (4 connections per worker);
    /health has a connection of its own, so it still answers 200 at once rather than a 503
    that would get a healthy pod restarted."""
    database = create_database(pg_cluster)
    with running_server(pg_cluster, database, DB_LOCK_TIMEOUT="60000") as server:
        listing = f"{server.url}/api/v1/resources/queues"
        with ThreadPoolExecutor(6) as clients:
            with other_session(pg_cluster, database) as run:
                run("LOCK TABLE queen.queues IN ACCESS EXCLUSIVE MODE").result(10)
                stuck = [clients.submit(httpx.get, listing, timeout=60) for _ in range(6)]
                wait_until(
                    lambda: (
                        sessions_waiting_for_a_lock(pg_cluster, database, "queen-w0-admin") == 4
                    ),
                    timeout_s=10,
                    what="every admin connection to wait for the lock",
                )
                started = time.monotonic()
                response = httpx.get(f"{server.url}/health", timeout=5)
                assert response.status_code == 200, response.text
                assert time.monotonic() - started < 1.0
            assert [future.result(30).status_code for future in stuck] == [200] * 6
