"""Runtime for compat scripts. Runs inside an official client's virtualenv, never under pytest.

A script defines `async def main(client, args)` and ends with `run(main)`: the client is a
`queen.Queen` bound to `QUEEN_URL`, `args` is the JSON object from `QUEEN_COMPAT_ARGS`, and whatever
`main` returns is printed as JSON on the last stdout line (after the client's own close messages),
where the harness reads it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from queen import Queen

Main = Callable[[Queen, dict[str, Any]], Awaitable[Any]]
CLIENT_VERSION = os.environ.get("QUEEN_COMPAT_CLIENT", "")
IS_V2 = CLIENT_VERSION.startswith("2.")


def server_url() -> str:
    return os.environ["QUEEN_URL"]


def script_args() -> dict[str, Any]:
    parsed = json.loads(os.environ.get("QUEEN_COMPAT_ARGS") or "{}")
    assert isinstance(parsed, dict), "QUEEN_COMPAT_ARGS must be a JSON object"
    return parsed


def new_client() -> Queen:
    """Bound to QUEEN_URL; with QUEEN_BEARER_TOKEN set, the client sends it as a bearer token
    (given by keyword: both clients ignore the other keywords beside a positional URL)."""
    token = os.environ.get("QUEEN_BEARER_TOKEN")
    if token:
        return Queen(url=server_url(), bearer_token=token)
    return Queen(server_url())


def plain(message: Any) -> Any:
    """A message without what the client attached to it (consume() adds a `trace` coroutine)."""
    if isinstance(message, dict):
        return {k: v for k, v in message.items() if not callable(v)}
    if isinstance(message, list):
        return [plain(m) for m in message]
    return message


def to_json(value: Any) -> Any:
    """A client result made JSON-safe (2.6 returns dict subclasses; exceptions become text)."""
    if isinstance(value, BaseException):
        return {"exception": type(value).__name__, "message": str(value)}
    return json.loads(json.dumps(plain(value), default=repr))


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, every_s: float = 0.02
) -> bool:
    """Await a condition instead of sleeping a fixed time; False when the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every_s)
    return False


def run(main: Main) -> None:
    async def go() -> Any:
        client = new_client()
        try:
            return await main(client, script_args())
        finally:
            await client.close()

    result = asyncio.run(go())
    sys.stdout.write("\n" + json.dumps(to_json(result)) + "\n")
    sys.stdout.flush()
