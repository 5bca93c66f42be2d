"""What a web page can make a browser do to queen (issue 14, spec §5.1, D-O1): a cross-site
"simple request" cannot change anything, foreign origins cannot drive admin routes even with
JWT off, and QUEEN_CORS_ORIGINS limits which pages may read answers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from queen.storage.pgcluster import PgCluster
from tests.integration.api import unique
from tests.support import ServerProcess, create_database, running_server

pytestmark = pytest.mark.timeout(90)

APP = "https://app.example"


@pytest.fixture(scope="module")
def listed(pg_cluster: PgCluster) -> Iterator[ServerProcess]:
    with running_server(
        pg_cluster, create_database(pg_cluster), QUEEN_CORS_ORIGINS=f"{APP}, https://ops.example"
    ) as process:
        yield process


def pop_maintenance(server: ServerProcess) -> bool:
    response = httpx.get(f"{server.url}/api/v1/system/maintenance/pop")
    enabled: bool = response.json()["popMaintenanceMode"]
    return enabled


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {},  # an untyped blob
    ],
)
def test_a_simple_request_cannot_change_state(
    server: ServerProcess, headers: dict[str, str]
) -> None:
    response = httpx.post(
        f"{server.url}/api/v1/system/maintenance/pop",
        content=b'{"enabled": true}',
        headers=headers,
    )
    assert (response.status_code, response.json()) == (
        415,
        {"error": "Content-Type must be application/json"},
    )
    assert pop_maintenance(server) is False
    pushed = httpx.post(
        f"{server.url}/api/v1/push",
        content=b'{"items": [{"queue": "q", "payload": 1}]}',
        headers=headers,
    )
    assert pushed.status_code == 415


def test_a_foreign_origin_cannot_drive_admin_routes(server: ServerProcess) -> None:
    refused = httpx.post(
        f"{server.url}/api/v1/system/maintenance/pop",
        json={"enabled": True},
        headers={"Origin": "https://evil.example"},
    )
    assert (refused.status_code, refused.json()) == (
        403,
        {"error": "Cross-origin admin request refused"},
    )
    assert pop_maintenance(server) is False
    same_origin = httpx.get(
        f"{server.url}/api/v1/system/maintenance", headers={"Origin": server.url}
    )
    assert same_origin.status_code == 200
    pushed = httpx.post(
        f"{server.url}/api/v1/push",
        json={"items": [{"queue": unique("cors"), "payload": 1}]},
        headers={"Origin": "https://evil.example"},
    )
    assert pushed.status_code == 201  # not an admin route; a bearer token would protect it


def test_listed_origins_only_are_allowed(listed: ServerProcess) -> None:
    allowed = httpx.get(f"{listed.url}/health", headers={"Origin": APP})
    assert allowed.headers["access-control-allow-origin"] == APP
    assert allowed.headers["vary"] == "Origin"
    other = httpx.get(f"{listed.url}/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = httpx.options(f"{listed.url}/api/v1/push", headers={"Origin": APP})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == APP
    admin = httpx.get(f"{listed.url}/api/v1/system/maintenance", headers={"Origin": APP})
    assert admin.status_code == 200
