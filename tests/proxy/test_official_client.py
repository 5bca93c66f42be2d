"""The official client 0.15.0 through the proxy with a service token from `queen proxy
create-token`: push, pop and ack reach the broker (whose own auth is off) as that service."""

from __future__ import annotations

import uuid

from tests.compat.harness import CLIENT_015, ClientRunner
from tests.proxy.support import ProxyProcess, create_token

SCRIPT = """
import asyncio, json, os, sys
from compat_runtime import to_json
from queen import Queen

async def main():
    # Keyword arguments: 0.15 ignores bearer_token when the URL is passed positionally.
    client = Queen(url=os.environ["QUEEN_URL"], bearer_token=os.environ["QUEEN_PROXY_TOKEN"])
    try:
        queue = json.loads(os.environ["QUEEN_COMPAT_ARGS"])["queue"]
        pushed = await client.queue(queue).push([{"data": {"n": n}} for n in range(3)])
        popped = await client.queue(queue).batch(10).wait(False).pop()
        acked = await client.ack(popped)
        again = await client.queue(queue).batch(10).wait(False).pop()
        return {"pushed": pushed, "popped": popped, "acked": acked, "again": again}
    finally:
        await client.close()

result = asyncio.run(main())
sys.stdout.write("\\n" + json.dumps(to_json(result)) + "\\n")
"""


def test_official_client_pushes_pops_and_acks_through_the_proxy(proxy: ProxyProcess) -> None:
    token = create_token(proxy.env, "orders_service", "read-write")
    runner = ClientRunner(CLIENT_015, proxy)  # type: ignore[arg-type]
    queue = f"proxied-{uuid.uuid4().hex[:10]}"
    result = runner.run(SCRIPT, {"queue": queue}, env={"QUEEN_PROXY_TOKEN": token})
    assert len(result["pushed"]) == 3
    assert sorted(m["data"]["n"] for m in result["popped"]) == [0, 1, 2]
    assert result["again"] == []
    assert result["acked"]["success"] is True
    assert [item["success"] for item in result["acked"]["results"]] == [True, True, True]
