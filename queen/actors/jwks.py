"""The JWKS actor: keeps the issuer's signing keys (JWT_JWKS_URL) fresh, in the background, so
no request ever waits on the network for them (spec D-J5).

One loop does every fetch, so fetches are single-flight by construction: at start, every
JWT_JWKS_REFRESH_INTERVAL, and when the gate meets a `kid` it does not know (at most once per
REFETCH_COOLDOWN_S, so a stream of forged kids cannot turn into a stream of fetches). A fetch
that fails or yields no usable key keeps the last good set; until one set was ever loaded, the
gate answers 503 and the loop retries every RETRY_S. Readers take `keys`, an immutable snapshot.
"""

from __future__ import annotations

import logging
import math
import urllib.request
from typing import Any

import orjson
import trio

from queen.config import Config
from queen.security.keys import KeySet

log = logging.getLogger("queen.jwks")

REFETCH_COOLDOWN_S = 30.0
RETRY_S = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024


class JwksKeys:
    def __init__(self, config: Config, cooldown_s: float = REFETCH_COOLDOWN_S) -> None:
        self.url = config.jwt_jwks_url if config.jwt_enabled else ""
        self.interval_s = float(config.jwt_jwks_refresh_interval)
        self.timeout_s = config.jwt_jwks_timeout_ms / 1000
        self.cooldown_s = cooldown_s
        self.keys: KeySet | None = None
        self.fetches = 0
        self._last_fetch = -math.inf
        self._wanted = trio.Event()

    def snapshot(self) -> KeySet | None:
        return self.keys

    def request_refresh(self) -> None:
        """An unknown kid: refetch soon, unless a fetch ran within the cooldown. Never blocks."""
        if trio.current_time() - self._last_fetch >= self.cooldown_s:
            self._wanted.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.url:  # idle, but a child like any other (supervision tests crash each)
            await trio.sleep_forever()
        while True:
            self._wanted = trio.Event()
            self._last_fetch = trio.current_time()
            await self._fetch_once()
            wait_s = self.interval_s if self.keys is not None else RETRY_S
            with trio.move_on_after(wait_s):
                await self._wanted.wait()

    async def _fetch_once(self) -> None:
        # Here, not at the top: a worker with no JWKS URL never loads PyJWT (issue 20).
        from queen.security.key_loading import parse_jwks  # noqa: PLC0415

        self.fetches += 1
        try:
            document = await trio.to_thread.run_sync(
                _get_json, self.url, self.timeout_s, abandon_on_cancel=True
            )
            keys = parse_jwks(document)
        except (OSError, ValueError) as error:
            log.warning(
                "JWKS fetch failed; keeping the last good key set",
                extra={"error": str(error), "have_keys": self.keys is not None},
            )
            return
        if self.keys is None or self.keys.keys != keys.keys:
            log.info("JWKS loaded", extra={"keys": len(keys.keys)})
            self.keys = keys


def _get_json(url: str, timeout_s: float) -> Any:
    """One GET in a worker thread (the stdlib client does the TLS and the URL parsing)."""
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError("JWT_JWKS_URL must be an http or https URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if response.status != 200:
            raise ValueError(f"JWKS endpoint answered {response.status}")
        body = response.read(MAX_DOCUMENT_BYTES + 1)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError("JWKS document too large")
    return orjson.loads(body)
