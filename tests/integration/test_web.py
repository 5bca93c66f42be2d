"""The dashboard on the broker's port: its pages and files are served, its fallback never takes a
path of the API, probes, metrics or streams, and the listings it pages through filter on the
server (partitions by name and lease state, queues by exact name)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, running_server

CLIENT_ROUTES = ["/", "/queues", "/queues/orders%20eu", "/consumers", "/dlq", "/system", "/nope"]


async def test_pages_and_files_are_served_with_their_types(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
        index = await client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        assert index.headers["cache-control"] == "no-cache, no-store, must-revalidate"
        assert '<script type="module" src="/assets/app.js">' in index.text
        for route in CLIENT_ROUTES:
            page = await client.get(route)
            assert (page.status_code, page.text) == (200, index.text), route
        script = await client.get("/assets/app.js")
        assert script.status_code == 200
        assert script.headers["content-type"] == "text/javascript; charset=utf-8"
        styles = await client.get("/assets/vendor/uplot/uPlot.min.css")
        assert styles.headers["content-type"] == "text/css; charset=utf-8"
        missing = await client.get("/assets/missing.js")
        assert (missing.status_code, missing.text) == (404, "Not Found")
        head = await client.head("/queues")
        assert (head.status_code, head.content) == (200, b"")


async def test_the_fallback_never_takes_api_probe_metrics_or_stream_paths(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
        for method, path in [
            ("GET", "/api/v1/nope"),
            ("POST", "/api/v1/nope"),
            ("GET", "/api/me"),
            ("GET", "/metricsx"),
            ("GET", "/healthz"),
            ("GET", "/streams/v1/nope"),
            ("GET", "/ws/x"),
        ]:
            response = await client.request(method, path)
            assert response.status_code == 404, (method, path)
            assert response.json() == {"error": "Not found"}, (method, path)
        wrong_method = await client.get("/api/v1/push")
        assert wrong_method.status_code == 405
        assert (await client.get("/health")).json()["status"] == "healthy"
        assert "uptime" in (await client.get("/metrics")).json()


async def test_paths_leaving_the_root_are_forbidden(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
        for raw in ["/%2e%2e/%2e%2e/pyproject.toml", "/assets/%2e%2e/%2e%2e/%2e%2e/config.py"]:
            url = httpx.URL(server.url).copy_with(raw_path=raw.encode())
            response = await client.get(url)
            assert (response.status_code, response.text) == (403, "Forbidden"), raw


def test_webapp_root_replaces_the_shipped_dashboard(pg_cluster: PgCluster, database: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="queen-webapp-"))
    with running_server(pg_cluster, database, WEBAPP_ROOT=str(root)) as process:
        off = httpx.get(f"{process.url}/", timeout=10.0)
        assert (off.status_code, off.json()) == (404, {"error": "Not found"})
        assert httpx.get(f"{process.url}/health", timeout=10.0).status_code == 200
        (root / "index.html").write_text("<p>custom</p>")
        assert httpx.get(f"{process.url}/queues", timeout=10.0).text == "<p>custom</p>"


async def test_partitions_filter_by_name_and_lease_state(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        status, _ = await api.request(
            "POST", "/api/v1/configure", json={"queue": queue, "options": {"leaseTime": 1}}
        )
        assert status == 200
        for partition in ("eu-1", "eu-2", "us-1"):
            await api.push(queue, [{"p": partition}], partition=partition)
        popped = await api.pop(queue, "eu-2", wait="false")
        assert popped is not None

        async def listed(**params: str) -> list[str]:
            status, body = await api.request(
                "GET", "/api/v1/resources/partitions", params={"queue": queue, **params}
            )
            assert status == 200, body
            return [p["name"] for p in body["partitions"]]

        assert await listed(search="EU") == ["eu-1", "eu-2"]
        assert await listed(leases="held") == ["eu-2"]
        with trio.fail_after(10):
            while True:  # until the 1 s lease runs out
                if await listed(leases="stuck") == ["eu-2"]:
                    break
                await trio.sleep(0.1)
        status, body = await api.request(
            "GET", "/api/v1/resources/partitions", params={"queue": queue, "search": "eu-2"}
        )
        lease = body["partitions"][0]["leases"]
        assert (lease["active"], lease["expired"]) == (0, 1)
        status, body = await api.request(
            "GET", "/api/v1/resources/partitions", params={"queue": queue, "leases": "all"}
        )
        assert status == 400


async def test_queues_filter_by_exact_name_with_options(server: ServerProcess) -> None:
    queue = unique()
    async with Api(server.url) as api:
        await api.push(queue, [{"n": 1}, {"n": 2}])
        await api.push(f"{queue}-other", [{"n": 1}])
        status, body = await api.request("GET", "/api/v1/resources/queues", params={"name": queue})
        assert status == 200
        assert [q["name"] for q in body["queues"]] == [queue]
        assert body["queues"][0]["messages"]["pending"] == 2
        assert body["queues"][0]["options"]["leaseTime"] == 300
