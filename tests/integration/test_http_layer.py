"""The HTTP layer answers every request, including ones rejected before their body was read."""

from __future__ import annotations

import httpx

from tests.support import ServerProcess


async def test_requests_rejected_before_reading_their_body_are_always_answered(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as client:
        for _ in range(60):
            response = await client.post("/api/v1/lease/not-a-uuid/extend", json={"seconds": 5})
            assert response.status_code == 400
            response = await client.request(
                "DELETE", f"/api/v1/resources/queues/{'q' * 300}", json={"unused": True}
            )
            assert response.status_code == 400
