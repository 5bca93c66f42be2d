"""A thin raw-HTTP client for integration tests: each call returns (status, body) so tests assert
on exactly what a client would see."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import trio


def unique(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Api:
    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.client.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = await self.client.request(method, path, **kwargs)
        body = response.json() if response.content else None
        return response.status_code, body

    async def push(
        self, queue: str, payloads: list[Any], partition: str | None = None, **item_fields: Any
    ) -> list[dict[str, Any]]:
        items = [{"queue": queue, "payload": p, **item_fields} for p in payloads]
        if partition is not None:
            for item in items:
                item["partition"] = partition
        status, body = await self.request("POST", "/api/v1/push", json={"items": items})
        assert status == 201, body
        assert isinstance(body, list)
        return body

    async def pop(
        self, queue: str, partition: str | None = None, **params: Any
    ) -> dict[str, Any] | None:
        path = f"/api/v1/pop/queue/{queue}"
        if partition is not None:
            path += f"/partition/{partition}"
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        status, body = await self.request("GET", path, params=query)
        if status == 204:
            return None
        assert status == 200, body
        assert isinstance(body, dict)
        return body

    async def wait_parked(self, count: int, timeout_s: float = 10.0) -> None:
        """Until the server shows `count` long-polls parked (so a push now must wake them)."""
        with trio.fail_after(timeout_s):
            while True:
                _, metrics = await self.request("GET", "/metrics")
                if metrics["longPolls"]["parked"] >= count:
                    return
                await trio.sleep(0.02)

    async def ack(
        self, message: dict[str, Any], status: str = "completed", **extra: Any
    ) -> dict[str, Any]:
        body = {
            "transactionId": message["transactionId"],
            "partitionId": message["partitionId"],
            "leaseId": message.get("leaseId") or None,
            "status": status,
            "consumerGroup": message.get("consumerGroup"),
            **extra,
        }
        code, result = await self.request("POST", "/api/v1/ack", json=body)
        assert code == 200, result
        assert isinstance(result, list) and len(result) == 1
        return result[0]  # type: ignore[no-any-return]

    async def ack_batch(
        self, messages: list[dict[str, Any]], status: str = "completed", group: str | None = None
    ) -> list[dict[str, Any]]:
        acks = [
            {
                "transactionId": m["transactionId"],
                "partitionId": m["partitionId"],
                "leaseId": m.get("leaseId") or None,
                "status": status,
            }
            for m in messages
        ]
        code, result = await self.request(
            "POST", "/api/v1/ack/batch", json={"acknowledgments": acks, "consumerGroup": group}
        )
        assert code == 200, result
        return result  # type: ignore[no-any-return]
