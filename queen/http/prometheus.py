"""`GET /metrics/prometheus` (operations spec §2.3) for the spellings the lean path leaves to quart;
the core is queen/http/probes.py's `scrape_answer`."""

from __future__ import annotations

from quart import Blueprint, Response

from queen.http.context import services
from queen.http.probes import scrape_answer
from queen.http.responses import as_response

blueprint = Blueprint("prometheus", __name__)


@blueprint.get("/metrics/prometheus")
async def prometheus() -> Response:
    return as_response(await scrape_answer(services()))
