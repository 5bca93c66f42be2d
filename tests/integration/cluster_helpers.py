"""What the cluster tests share: the shared-state route, one timed wake-up across instances, and
percentiles."""

from __future__ import annotations

import math
import socket
from typing import Any

import httpx
import trio

from tests.integration.api import Api, unique
from tests.support import ServerProcess


def free_udp_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def shared_state(process: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{process.url}/api/v1/system/shared-state", timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_parked_in_some_worker(url: str) -> None:
    """/metrics is per worker: probe on fresh connections until one lands where the pop waits."""
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=url, timeout=5, limits=fresh_connections) as probe:
            while True:
                if (await probe.get("/metrics")).json()["longPolls"]["parked"] > 0:
                    return
                await trio.sleep(0.01)


async def one_wake(
    producer: Api, consumer: Api, *, any_worker: bool = False
) -> tuple[float, float, list[str]]:
    """Park a pop on the consumer's instance, push on the producer's: seconds from the push
    request to the pop's answer, the push's own round trip, and the ids the pop delivered.
    `any_worker`: the consumer's instance runs several workers, the pop may wait in any."""
    queue = unique("wake")
    answer: dict[str, Any] = {}

    async def pop() -> None:
        answer["body"] = await consumer.pop(queue, wait=True, timeout=20000)
        answer["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pop)
        if any_worker:
            await wait_parked_in_some_worker(str(consumer.client.base_url))
        else:
            await consumer.wait_parked(1)
        pushed_at = trio.current_time()
        await producer.push(queue, [{"n": 1}])
        push_rtt = trio.current_time() - pushed_at
    body = answer["body"]
    assert body is not None, "the pop ended empty"
    ids = [m["transactionId"] for m in body["messages"]]
    return answer["at"] - pushed_at, push_rtt, ids


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (
        f"p50 {ordered[len(ordered) // 2] * 1000:.1f} ms, p99 {p99(samples) * 1000:.1f} ms,"
        f" max {ordered[-1] * 1000:.1f} ms"
    )


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
