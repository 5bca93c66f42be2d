"""The dashboard's static files, served on the broker's own port (operations spec §9.1).

`/` and every client-side route answer `index.html` (history-mode SPA fallback), files under the
root answer themselves. The fallback's rule cannot match the API's prefixes at all, so an unknown
`/api/...` path keeps the JSON 404 (and a wrong method on an API path its 405) of the error table.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from pathlib import Path
from typing import cast

import trio
from quart import Blueprint, Response, current_app
from quart_trio import QuartTrio
from werkzeug.exceptions import NotFound
from werkzeug.routing import BaseConverter

from queen.http.web_root import INDEX

log = logging.getLogger("queen.http")
blueprint = Blueprint("web", __name__)

ROOT_KEY = "queen.web_root"
# Paths the dashboard never owns: the API, probes, metrics, streams and websockets (spec §9.1).
RESERVED = ("api/", "health", "metrics", "ws/", "streams/", "internal/")
IMMUTABLE = "public, max-age=31536000, immutable"
HASHED_NAME = re.compile(r"\.[0-9a-f]{8,}\.(js|css)$")
TEXT_TYPES = {".html", ".js", ".mjs", ".css", ".json", ".svg", ".txt", ".md"}
TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".md": "text/markdown",
}


class DashboardPathConverter(BaseConverter):
    """Any path (slashes included) that does not start with a reserved prefix."""

    regex = "(?!" + "|".join(re.escape(prefix) for prefix in RESERVED) + ").*"
    part_isolating = False
    weight = 200  # below every other rule: only what nothing else routes reaches the dashboard


def install(app: QuartTrio, root: Path) -> None:
    """Register the fallback's converter (before the blueprint) and the root it serves (resolved
    and checked at start-up: queen/http/web_root.py)."""
    app.url_map.converters["dashboard_path"] = DashboardPathConverter
    app.extensions[ROOT_KEY] = root


def web_root() -> Path:
    return cast(Path, current_app.extensions[ROOT_KEY])


@blueprint.get("/")
async def index() -> Response:
    return await _page(web_root())


@blueprint.get("/<dashboard_path:path>")
async def page_or_file(path: str) -> Response:
    root = web_root()
    try:
        candidate = (root / path).resolve()
        is_file = candidate.is_file()
    except (OSError, ValueError):  # a NUL byte, a name longer than the filesystem allows
        candidate, is_file = root, False
    if not candidate.is_relative_to(root):
        return Response("Forbidden", status=403, content_type="text/plain; charset=utf-8")
    if is_file:
        return await _file(root, str(candidate.relative_to(root)))
    if path.startswith("assets/"):
        return Response("Not Found", status=404, content_type="text/plain; charset=utf-8")
    return await _page(root)


async def _page(root: Path) -> Response:
    if not (root / INDEX).is_file():
        raise NotFound()
    return await _file(root, INDEX)


async def _file(root: Path, relative: str) -> Response:
    path = root / relative
    body = await trio.Path(path).read_bytes()  # in a thread: a slow disk never stalls the worker
    response = Response(body, status=200, content_type=_content_type(path))
    response.headers["Cache-Control"] = _cache_control(relative)
    return response


def _content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    kind = TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if suffix in TEXT_TYPES else kind


def _cache_control(relative: str) -> str:
    """Our asset names carry no content hash, so they are revalidated rather than cached for a
    year: an upgraded broker must never run with a browser's stale copy of the old dashboard."""
    if relative == INDEX:
        return "no-cache, no-store, must-revalidate"
    if HASHED_NAME.search(relative):
        return IMMUTABLE
    return "no-cache"
