"""`queen proxy`: one process serving the proxy app with hypercorn on trio.

Start-up order: the database and its queen_proxy migrations first (the original exits when it
cannot create its tables; so do we), then the HTTP port. SIGINT/SIGTERM stop it gracefully;
expired sessions are forgotten hourly.
"""

from __future__ import annotations

import logging
import signal

import trio
import trio_asyncio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from queen import __version__
from queen.proxy.app import ProxyServices, create_proxy_app
from queen.proxy.config import ProxyConfig
from queen.proxy.external import JwksVerifier
from queen.proxy.forward import open_client
from queen.proxy.gate import Authenticator
from queen.proxy.google import GoogleSignIn
from queen.proxy.store import ProxyStore, open_store
from queen.proxy.throttle import LoginThrottle
from queen.proxy.tokens import TokenService

log = logging.getLogger("queen.proxy")

SESSION_SWEEP_S = 3600.0


def _hypercorn_config(config: ProxyConfig) -> HypercornConfig:
    hc = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hc.bind = [f"{host}:{config.port}"]
    hc.graceful_timeout = 10
    hc.keep_alive_timeout = 75
    hc.read_timeout = None
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    return hc


async def _sweep_sessions(store: ProxyStore) -> None:
    while True:
        await trio.sleep(SESSION_SWEEP_S)
        try:
            await store.forget_expired_sessions()
        except Exception as error:
            log.warning("could not forget expired sessions", extra={"error": str(error)})


async def run_proxy(config: ProxyConfig) -> None:
    tokens = TokenService(config)
    async with trio_asyncio.open_loop(), open_store(config) as store, open_client() as client:
        applied = await store.migrate()
        if applied:
            log.info("applied proxy schema", extra={"files": applied})
        external = (
            JwksVerifier(
                config.external_jwks_url, config.external_issuers, config.external_audiences, client
            )
            if config.external_jwks_url
            else None
        )
        services = ProxyServices(
            config=config,
            store=store,
            tokens=tokens,
            auth=Authenticator(config, tokens, store, external),
            throttle=LoginThrottle(),
            client=client,
            google=GoogleSignIn(config, tokens, store, client),
        )
        stop = trio.Event()
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        if stop.is_set():
                            nursery.cancel_scope.cancel()
                            return
                        stop.set()

            nursery.start_soon(watch_signals)
            nursery.start_soon(_sweep_sessions, store)
            log.info(
                "proxy serving",
                extra={
                    "port": config.port,
                    "upstream": config.queen_server_url or None,
                    "version": __version__,
                },
            )
            await serve(
                create_proxy_app(services), _hypercorn_config(config), shutdown_trigger=stop.wait
            )
            nursery.cancel_scope.cancel()
    log.info("proxy stopped")
