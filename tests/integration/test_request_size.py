"""Large requests: an ack batch over thousands of partitions and a transaction of thousands of
operations either answer within 2 s or are refused at once (QUEEN_MAX_REQUEST_ITEMS), and never
exhaust PostgreSQL's lock table."""

from __future__ import annotations

import time
from typing import Any

import pytest

from queen.config import Config
from tests.integration.api import Api, unique
from tests.support import ServerProcess

HUGE = 20_000
ANSWER_WITHIN_S = 2.0


async def push_one_per_partition(api: Api, queue: str, count: int) -> list[dict[str, Any]]:
    """`count` messages, each in a partition of its own: as many (partition, group) keys."""
    items = [
        {"queue": queue, "partition": f"p{n}", "transactionId": f"t{n}", "payload": {"n": n}}
        for n in range(count)
    ]
    per_push = Config.from_env({}).max_request_items
    results: list[dict[str, Any]] = []
    for start in range(0, count, per_push):
        chunk = {"items": items[start : start + per_push]}
        status, body = await api.request("POST", "/api/v1/push", json=chunk, timeout=120)
        assert status == 201, body
        results += body
    return [
        {"transactionId": f"t{n}", "partitionId": r["partition_id"]} for n, r in enumerate(results)
    ]


async def timed(api: Api, path: str, body: dict[str, Any]) -> tuple[int, Any, float]:
    started = time.monotonic()
    status, answer = await api.request("POST", path, json=body, timeout=120)
    return status, answer, time.monotonic() - started


def refused(status: int, answer: Any) -> bool:
    return status in (400, 413) and isinstance(answer, dict) and bool(answer.get("error"))


@pytest.mark.timeout(300)
async def test_an_ack_batch_over_thousands_of_partitions_answers_or_is_refused_fast(
    server: ServerProcess,
) -> None:
    queue = unique("wide-ack")
    async with Api(server.url) as api:
        messages = await push_one_per_partition(api, queue, HUGE)
        acks = [{**m, "status": "completed"} for m in messages]
        status, answer, took = await timed(api, "/api/v1/ack/batch", {"acknowledgments": acks})
        assert took < ANSWER_WITHIN_S, f"{HUGE} acks took {took:.1f}s ({status})"
        if not refused(status, answer):
            assert status == 200 and all(r["success"] for r in answer), answer[:3]

        largest = Config.from_env({}).max_request_items
        status, answer, took = await timed(
            api, "/api/v1/ack/batch", {"acknowledgments": acks[:largest]}
        )
        assert status == 200, answer
        assert all(r["success"] for r in answer)
        assert took < ANSWER_WITHIN_S, f"{largest} acks took {took:.1f}s"


@pytest.mark.timeout(300)
async def test_a_transaction_of_thousands_of_operations_answers_or_is_refused_fast(
    server: ServerProcess,
) -> None:
    queue = unique("wide-tx")
    ops = [
        {"type": "push", "items": [{"queue": queue, "partition": f"p{n % 100}", "payload": {}}]}
        for n in range(HUGE)
    ]
    async with Api(server.url) as api:
        status, answer, took = await timed(api, "/api/v1/transaction", {"operations": ops})
        assert took < ANSWER_WITHIN_S, f"{HUGE} operations took {took:.1f}s ({status})"
        if not refused(status, answer):
            assert status == 200 and answer["success"], answer.get("error")

        largest = Config.from_env({}).max_request_items
        status, answer, took = await timed(
            api, "/api/v1/transaction", {"operations": ops[:largest]}
        )
        assert status == 200 and answer["success"], answer
        assert took < ANSWER_WITHIN_S, f"{largest} operations took {took:.1f}s"


async def test_one_item_past_the_limit_is_refused_with_an_error(server: ServerProcess) -> None:
    largest = Config.from_env({}).max_request_items
    ack = {"transactionId": "t", "partitionId": "00000000-0000-0000-0000-000000000001"}
    push = {"type": "push", "items": [{"queue": unique(), "payload": {}}]}
    async with Api(server.url) as api:
        status, answer = await api.request(
            "POST", "/api/v1/ack/batch", json={"acknowledgments": [ack] * (largest + 1)}
        )
        assert refused(status, answer), (status, answer)
        status, answer = await api.request(
            "POST", "/api/v1/transaction", json={"operations": [push] * (largest + 1)}
        )
        assert refused(status, answer), (status, answer)
