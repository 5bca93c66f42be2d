"""`GET /metrics/prometheus` (operations spec §2.3): what every worker of this `queen serve`
recorded, merged, plus one database query's figures (queen/metrics/exposition.py). Always 200;
the database part is bounded in time and left out when it fails."""

from __future__ import annotations

import logging
import time

import trio
from quart import Blueprint, Response

from queen.db import metrics
from queen.http.context import services
from queen.metrics.exposition import CONTENT_TYPE, DatabaseFigures, render

log = logging.getLogger("queen.metrics")
blueprint = Blueprint("prometheus", __name__)

DATABASE_TIMEOUT_S = 5.0


@blueprint.get("/metrics/prometheus")
async def prometheus() -> Response:
    svc = services()
    started = time.perf_counter()
    snapshot = None
    try:
        with trio.fail_after(DATABASE_TIMEOUT_S + 1):
            snapshot = await metrics.prometheus_snapshot(svc.admin, DATABASE_TIMEOUT_S)
    except Exception as error:
        log.warning("scrape: database figures unavailable", extra={"error": str(error)})
    figures = DatabaseFigures(snapshot, time.perf_counter() - started)
    body = await trio.to_thread.run_sync(render, svc.metrics.directory, figures)
    response = Response(body, status=200, content_type=CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-cache"
    return response
