"""Liveness and process metrics: `/health` (its core, shared with the lean path, is in
queen/http/probes.py), `/metrics` reports real numbers."""

from __future__ import annotations

import resource
import time

from quart import Blueprint, Response

from queen.http.context import body_budget, services
from queen.http.probes import buffer_state, health_answer
from queen.http.responses import as_response, json_response

blueprint = Blueprint("system", __name__)


@blueprint.get("/health")
async def health() -> Response:
    return as_response(await health_answer(services()))


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
        "fileBuffer": buffer_state(svc),
        "cpu": {"user": int(usage.ru_utime * 1_000_000), "system": int(usage.ru_stime * 1_000_000)},
    }
    return json_response(body)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
