"""Liveness and process metrics: `/health` answers from a bounded database probe (never blocks
other requests, 503 within ~2 s when PostgreSQL is gone), `/metrics` reports real numbers."""

from __future__ import annotations

import logging
import resource
import time
from typing import Any

import trio
from quart import Blueprint, Response

from queen import __version__
from queen.actors.mailbox import ActorGone
from queen.db import system
from queen.db.errors import DatabaseError, DatabaseUnavailable
from queen.http.context import body_budget, services
from queen.http.responses import json_response

log = logging.getLogger("queen.http")
blueprint = Blueprint("system", __name__)

HEALTH_PROBE_TIMEOUT_S = 2.0
SERVER_NAME = "queen (python)"


async def _database_answers() -> bool:
    """Whatever stops the probe from answering means the database is not usable: the probe
    reports it as unhealthy (503) rather than failing as a 500 of its own."""
    with trio.move_on_after(HEALTH_PROBE_TIMEOUT_S + 0.5):
        try:
            return await system.ping(services().probe, timeout_s=HEALTH_PROBE_TIMEOUT_S)
        except (DatabaseUnavailable, DatabaseError, ActorGone, TimeoutError):
            return False
        except Exception as error:
            log.warning("health probe failed", exc_info=error)
            return False
    return False


@blueprint.get("/health")
async def health() -> Response:
    svc = services()
    healthy = await _database_answers()
    body: dict[str, Any] = {
        "status": "healthy" if healthy else "unhealthy",
        "database": "connected" if healthy else "disconnected",
        "server": SERVER_NAME,
        "worker_id": svc.worker_id,
        "version": __version__,
        "shared_state": _public_shared_state(),
        "queen": {"worker_id": svc.worker_id, "status": "active"},
        "fileBuffer": _buffer_state(),
    }
    return json_response(body, 200 if healthy else 503)


@blueprint.get("/metrics")
async def metrics() -> Response:
    svc = services()
    budget = body_budget()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counters = svc.counters
    body = {
        "uptime": round(time.monotonic() - svc.started_at, 3),
        "requests": {
            "total": counters.requests,
            "rate": counters.rate(counters.request_marks, counters.requests),
        },
        "messages": {
            "total": counters.messages_pushed,
            "rate": counters.rate(counters.message_marks, counters.messages_pushed),
        },
        "database": {
            "poolSize": svc.admin.size + svc.hot.size,
            "idleConnections": max(
                0,
                svc.admin.health.connected
                + svc.hot.health.connected
                - svc.admin.waiting
                - svc.hot.waiting,
            ),
            "waitingRequests": svc.admin.waiting + svc.hot.waiting,
        },
        "memory": {
            "rss": _rss_bytes(),
            "heapTotal": 0,
            "heapUsed": 0,
            "external": 0,
            "arrayBuffers": 0,
        },
        "longPolls": {"parked": svc.consumer_groups.parked, "polls": svc.consumer_groups.polls},
        "requestBodies": {"heldBytes": budget.held_bytes, "refused": budget.refused},
        "fileBuffer": _buffer_state(),
        "cpu": {"user": int(usage.ru_utime * 1_000_000), "system": int(usage.ru_stime * 1_000_000)},
    }
    return json_response(body)


def _public_shared_state() -> dict[str, Any]:
    """Only whether sync runs (D-J13): peers, ids and counters are for the ADMIN route."""
    state = services().cluster.shared_state()
    return {"enabled": state.get("enabled", False), "running": state.get("running", False)}


def _buffer_state() -> dict[str, Any]:
    buffer = services().file_buffer
    return {
        "available": buffer.available,
        "pending": buffer.pending,
        "failed": buffer.directory.failed,
        "dbHealthy": buffer.db_healthy,
    }


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
