"""The cores of what probes and scrapers call: `GET /health` answers from a bounded database probe
(never blocks other requests, 503 within ~2 s when PostgreSQL is gone), `GET /metrics/prometheus`
(operations spec §2.3) what every worker of this `queen serve` recorded, merged, plus one database
query's figures (queen/metrics/exposition.py; always 200, the database part bounded in time and
left out when it fails).

Both are called every few seconds by a deployment's probes and scrapers, so the lean path
(queen/http/lean.py) answers them and they never make a worker load quart; quart's routes
(queen/http/system.py, prometheus.py) serve their other spellings with the same cores.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from queen import __version__
from queen.actors.mailbox import ActorGone
from queen.actors.root import Services
from queen.db import metrics, system
from queen.db.errors import DatabaseError, DatabaseUnavailable
from queen.http.answers import Answer, json_answer

log = logging.getLogger("queen.http")

HEALTH_PROBE_TIMEOUT_S = 2.0
SCRAPE_DATABASE_TIMEOUT_S = 5.0
SERVER_NAME = "queen (python)"


async def health_answer(svc: Services) -> Answer:
    healthy = await _database_answers(svc)
    body: dict[str, Any] = {
        "status": "healthy" if healthy else "unhealthy",
        "database": "connected" if healthy else "disconnected",
        "server": SERVER_NAME,
        "worker_id": svc.worker_id,
        "version": __version__,
        "shared_state": _public_shared_state(svc),
        "queen": {"worker_id": svc.worker_id, "status": "active"},
        "fileBuffer": buffer_state(svc),
    }
    return json_answer(body, 200 if healthy else 503)


async def _database_answers(svc: Services) -> bool:
    """Whatever stops the probe from answering means the database is not usable: the probe
    reports it as unhealthy (503) rather than failing as a 500 of its own."""
    with trio.move_on_after(HEALTH_PROBE_TIMEOUT_S + 0.5):
        try:
            return await system.ping(svc.probe, timeout_s=HEALTH_PROBE_TIMEOUT_S)
        except (DatabaseUnavailable, DatabaseError, ActorGone, TimeoutError):
            return False
        except Exception as error:
            log.warning("health probe failed", exc_info=error)
            return False
    return False


def _public_shared_state(svc: Services) -> dict[str, Any]:
    """Only whether sync runs (D-J13): peers, ids and counters are for the ADMIN route."""
    state = svc.cluster.shared_state()
    return {"enabled": state.get("enabled", False), "running": state.get("running", False)}


def buffer_state(svc: Services) -> dict[str, Any]:
    buffer = svc.file_buffer
    return {
        "available": buffer.available,
        "pending": buffer.pending,
        "failed": buffer.directory.failed,
        "dbHealthy": buffer.db_healthy,
    }


async def scrape_answer(svc: Services) -> Answer:
    # The multiprocess reader and text format (~0.5 MB) load with the first scrape.
    from queen.metrics.exposition import CONTENT_TYPE, DatabaseFigures, render  # noqa: PLC0415

    started = time.perf_counter()
    snapshot = None
    try:
        with trio.fail_after(SCRAPE_DATABASE_TIMEOUT_S + 1):
            snapshot = await metrics.prometheus_snapshot(svc.admin, SCRAPE_DATABASE_TIMEOUT_S)
    except Exception as error:
        log.warning("scrape: database figures unavailable", extra={"error": str(error)})
    figures = DatabaseFigures(snapshot, time.perf_counter() - started)
    svc.recorder.pending.flush()  # this worker's own figures up to now; the others' lag ≤ 1 sample
    body = await trio.to_thread.run_sync(render, svc.metrics.directory, figures)
    return Answer(200, body, CONTENT_TYPE, (("Cache-Control", "no-cache"),))
