"""What a push may cost a worker: at most QUEEN_MAX_REQUEST_ITEMS items (413 beyond), and request
bodies held at once within QUEEN_BODY_BUDGET_BYTES; a body that does not fit is read, dropped
and answered 503 with Retry-After, while requests that fit are served as usual. The story the
bounds exist for: four clients pushing 30 MB each at once leave the worker under 300 MB."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from queen.storage.pgcluster import PgCluster
from tests.integration.api import Api, unique
from tests.support import ServerProcess, create_database, running_server

JSON = {"content-type": "application/json"}
BUDGET = 1024 * 1024
HELD_BODY = 700_000
MAX_ITEMS = 5


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(
        pg_cluster,
        database,
        QUEEN_BODY_BUDGET_BYTES=str(BUDGET),
        QUEEN_MAX_REQUEST_ITEMS=str(MAX_ITEMS),
    ) as process:
        yield process


def push_body(queue: str, size: int) -> bytes:
    """One item whose payload makes the body exactly `size` bytes."""
    head = f'{{"items":[{{"queue":"{queue}","payload":"'.encode()
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def body_stats(api: Api) -> dict[str, int]:
    status, body = await api.request("GET", "/metrics")
    assert status == 200, body
    return dict(body["requestBodies"])


async def held_bytes_reach(api: Api, held: int) -> None:
    while True:
        if (await body_stats(api))["heldBytes"] == held:
            return
        await trio.sleep(0.01)


@pytest.mark.parametrize("escaped", [False, True], ids=["plain", "escaped"])
async def test_a_push_over_the_item_limit_is_413_and_stores_nothing(
    server: ServerProcess, escaped: bool
) -> None:
    """Plain bodies and bodies with escapes take different parsers: both count first."""
    queue = unique()
    payload = "caf\\u00e9" if escaped else "cafe"
    items = ",".join(f'{{"queue":"{queue}","payload":"{payload}"}}' for _ in range(MAX_ITEMS + 1))
    async with Api(server.url) as api:
        status, body = await api.request(
            "POST", "/api/v1/push", content=f'{{"items":[{items}]}}', headers=JSON
        )
        assert (status, body) == (
            413,
            {"error": f"at most {MAX_ITEMS} items per request, got {MAX_ITEMS + 1}"},
        )
        assert await api.pop(queue) is None
        assert len(await api.push(queue, ["ok"] * MAX_ITEMS)) == MAX_ITEMS


async def send_partly(url: str, body: bytes, sent: int) -> trio.SocketStream:
    """A push whose body is announced whole but only `sent` bytes of it have arrived."""
    host, port = re.match(r"http://([^:]+):(\d+)", url).groups()  # type: ignore[union-attr]
    stream = await trio.open_tcp_stream(host, int(port))
    head = (
        f"POST /api/v1/push HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    await stream.send_all(head + body[:sent])
    return stream


async def status_of_response(stream: trio.SocketStream) -> int:
    received = b""
    while b"\r\n" not in received:
        chunk = await stream.receive_some()
        assert chunk, "connection closed before a response"
        received += chunk
    return int(received.split(b" ", 2)[1])


async def test_a_body_beyond_the_budget_is_503_and_bodies_that_fit_are_served(
    server: ServerProcess,
) -> None:
    queue = unique()
    held = push_body(queue, HELD_BODY)
    async with Api(server.url) as api:
        refused_before = (await body_stats(api))["refused"]
        with trio.fail_after(30):
            stream = await send_partly(server.url, held, HELD_BODY // 2)
            await held_bytes_reach(api, HELD_BODY)

            response = await api.client.post(
                "/api/v1/push", content=push_body(queue, HELD_BODY), headers=JSON
            )
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.json() == {
                "error": "Server busy: too many request bodies in flight, retry later"
            }
            assert len(await api.push(queue, ["small"])) == 1  # fits beside the held body

            await stream.send_all(held[HELD_BODY // 2 :])
            assert await status_of_response(stream) == 201
            await stream.aclose()
            await held_bytes_reach(api, 0)
        assert (await body_stats(api))["refused"] == refused_before + 1
        status, results = await api.request(
            "POST", "/api/v1/push", content=push_body(queue, HELD_BODY), headers=JSON
        )
        assert status == 201, results


# --- the story: four 30 MB pushes at once ---------------------------------------------------------

BIG_PUSHES = 4
ITEMS_PER_BIG_PUSH = 10_000
RSS_LIMIT_MB = 300


def big_body(queue: str) -> bytes:
    """30 MB in 10 000 messages of 3 KB, the largest push the default limits take."""
    text = "x" * 3000
    body = orjson.dumps(
        {
            "items": [
                {"queue": queue, "payload": {"n": n, "text": text}}
                for n in range(ITEMS_PER_BIG_PUSH)
            ]
        }
    )
    assert 30_000_000 <= len(body) <= 32 * 1024 * 1024
    return body


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024  # type: ignore[union-attr]


@pytest.fixture
def fresh_server(pg_cluster: PgCluster) -> Iterator[ServerProcess]:
    """Default limits, one worker, new: its peak resident size is this test's alone."""
    with running_server(pg_cluster, create_database(pg_cluster)) as process:
        yield process


@pytest.mark.timeout(240)
async def test_four_30_mb_pushes_at_once_keep_the_worker_under_300_mb(
    fresh_server: ServerProcess,
) -> None:
    [worker] = fresh_server.worker_pids().values()
    queue = unique("big")
    body = big_body(queue)
    stored: list[int] = []
    refusals: list[int] = []
    small_rounds: list[float] = []

    async def push_until_stored() -> None:
        async with httpx.AsyncClient(base_url=fresh_server.url, timeout=120) as client:
            while True:
                response = await client.post("/api/v1/push", content=body, headers=JSON)
                if response.status_code != 503:
                    break
                refusals.append(1)
                await trio.sleep(float(response.headers["retry-after"]))  # as clients do
            assert response.status_code == 201, response.text[:500]
            stored.append(len(response.json()))

    async def small_client() -> None:
        """Another producer and consumer, and a health probe, served all along."""
        small = unique("small")
        async with Api(fresh_server.url) as api:
            while len(stored) < BIG_PUSHES:
                started = trio.current_time()
                await api.push(small, [{"round": len(small_rounds)}])
                popped = await api.pop(small, autoAck=True)
                assert popped is not None
                status, health = await api.request("GET", "/health")
                assert status == 200, health
                small_rounds.append(trio.current_time() - started)

    with trio.fail_after(200):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(small_client)
            for _ in range(BIG_PUSHES):
                nursery.start_soon(push_until_stored)

    assert peak_rss_mb(worker) < RSS_LIMIT_MB, f"peak RSS {peak_rss_mb(worker):.0f} MB"
    assert stored == [ITEMS_PER_BIG_PUSH] * BIG_PUSHES
    assert refusals, "the pushes were meant to overlap"
    assert len(small_rounds) >= 3 and max(small_rounds) < 10.0, small_rounds
