"""Where the dashboard's files are served from, apart from the dashboard's routes: a worker
checks the configured root at start-up (a WEBAPP_ROOT that cannot be resolved stops it there,
visibly), while the routes themselves and quart load only with the first request that needs them
(queen/http/lazy_app.py)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("queen.http")

PACKAGED_ROOT = Path(__file__).resolve().parent.parent / "web"
INDEX = "index.html"


def dashboard_root(configured: str | None) -> Path:
    """WEBAPP_ROOT resolved, or the dashboard packaged with queen."""
    return (Path(configured) if configured else PACKAGED_ROOT).resolve()


def check_dashboard_root(configured: str | None) -> None:
    """Raise if the root cannot be resolved; a root without index.html leaves the dashboard off
    (its pages a JSON 404) rather than failing the broker, and says so once, here. It is looked
    for on each request, so one put there later is served."""
    root = dashboard_root(configured)
    if not (root / INDEX).is_file():
        log.warning("dashboard off: no %s in %s", INDEX, root)
