"""Every route's access level, in one table keyed by method and path pattern (spec §1.8 and the
additions of D-J12). The access gate (queen/http/access.py) looks a request up here before any
handler runs; no handler checks a token itself.

`{name}` matches one path segment, `{name...}` the rest of the path (transaction ids may hold
slashes). A request matching no row is unknown: under /api/, /streams/ and /internal/ it needs
ADMIN, the strictest level (a route added without a row is closed, not open); any other GET is
the dashboard's (its files and its single-page fallback are public), any other method ADMIN.
"""

from __future__ import annotations

import re
from functools import lru_cache

from queen.security.tokens import Level

PUBLIC, READ_ONLY, READ_WRITE, ADMIN = Level.PUBLIC, Level.READ_ONLY, Level.READ_WRITE, Level.ADMIN

ROUTES: tuple[tuple[str, Level], ...] = (
    ("GET /health", PUBLIC),
    ("GET /metrics", PUBLIC),
    ("GET /metrics/prometheus", PUBLIC),
    # Status and analytics
    ("GET /api/v1/status", READ_ONLY),
    ("GET /api/v1/status/queues", READ_ONLY),
    ("GET /api/v1/status/queues/{queue}", READ_ONLY),
    ("GET /api/v1/status/queues/{queue}/messages", READ_ONLY),
    ("GET /api/v1/status/analytics", READ_ONLY),
    ("GET /api/v1/status/buffers", READ_ONLY),
    ("GET /api/v1/analytics/system-metrics", READ_ONLY),
    ("GET /api/v1/analytics/worker-metrics", READ_ONLY),
    ("GET /api/v1/analytics/queue-lag", READ_ONLY),
    ("GET /api/v1/analytics/queue-ops", READ_ONLY),
    ("GET /api/v1/analytics/queue-parked-replicas", READ_ONLY),
    ("GET /api/v1/analytics/retention", READ_ONLY),
    ("GET /api/v1/analytics/postgres-stats", READ_ONLY),
    # Resources
    ("GET /api/v1/resources/queues", READ_ONLY),
    ("GET /api/v1/resources/queues/{queue}", READ_ONLY),
    ("DELETE /api/v1/resources/queues/{queue}", ADMIN),
    ("GET /api/v1/resources/namespaces", READ_ONLY),
    ("GET /api/v1/resources/tasks", READ_ONLY),
    ("GET /api/v1/resources/overview", READ_ONLY),
    ("GET /api/v1/resources/partitions", READ_ONLY),
    # Messages, dead letters, traces
    ("GET /api/v1/messages", READ_ONLY),
    ("GET /api/v1/messages/{partition}/{transaction...}", READ_ONLY),
    ("DELETE /api/v1/messages/{partition}/{transaction...}", READ_WRITE),
    ("POST /api/v1/messages/{partition}/{transaction...}", READ_WRITE),  # …/retry, …/dlq
    ("POST /api/v1/queues/{queue}/clear", ADMIN),
    ("DELETE /api/v1/queues/{queue}/clear", ADMIN),
    ("GET /api/v1/dlq", READ_ONLY),
    ("POST /api/v1/traces", READ_WRITE),
    ("GET /api/v1/traces/names", READ_ONLY),
    ("GET /api/v1/traces/by-name/{name...}", READ_ONLY),
    ("GET /api/v1/traces/{partition}/{transaction...}", READ_ONLY),
    # Messaging
    ("POST /api/v1/configure", READ_WRITE),
    ("POST /api/v1/push", READ_WRITE),
    ("GET /api/v1/pop", READ_WRITE),
    ("GET /api/v1/pop/queue/{queue}", READ_WRITE),
    ("GET /api/v1/pop/queue/{queue}/partition/{partition}", READ_WRITE),
    ("POST /api/v1/ack", READ_WRITE),
    ("POST /api/v1/ack/batch", READ_WRITE),
    ("POST /api/v1/transaction", READ_WRITE),
    ("POST /api/v1/lease/{lease}/extend", READ_WRITE),
    # Consumer groups
    ("GET /api/v1/consumer-groups", READ_ONLY),
    ("GET /api/v1/consumer-groups/lagging", READ_ONLY),
    ("GET /api/v1/consumer-groups/{group}", READ_ONLY),
    ("DELETE /api/v1/consumer-groups/{group}", ADMIN),
    ("DELETE /api/v1/consumer-groups/{group}/queues/{queue}", ADMIN),
    ("POST /api/v1/consumer-groups/{group}/subscription", READ_WRITE),
    ("POST /api/v1/consumer-groups/{group}/queues/{queue}/seek", READ_WRITE),
    ("POST /api/v1/consumer-groups/{group}/queues/{queue}/partitions/{partition}/seek", READ_WRITE),
    # Administration
    ("POST /api/v1/stats/refresh", ADMIN),
    ("GET /api/v1/system/maintenance", ADMIN),
    ("POST /api/v1/system/maintenance", ADMIN),
    ("GET /api/v1/system/maintenance/pop", ADMIN),
    ("POST /api/v1/system/maintenance/pop", ADMIN),
    ("GET /api/v1/system/shared-state", ADMIN),
    ("POST /api/v1/migration/test-connection", ADMIN),
    ("POST /api/v1/migration/start", ADMIN),
    ("POST /api/v1/migration/validate", ADMIN),
    ("POST /api/v1/migration/reset", ADMIN),
    ("GET /api/v1/migration/status", ADMIN),
    ("POST /internal/api/notify", ADMIN),
    ("GET /internal/api/shared-state/stats", ADMIN),
    ("GET /internal/api/inter-instance/stats", ADMIN),
    # Streams
    ("POST /streams/v1/state/get", READ_ONLY),
    ("POST /streams/v1/queries", READ_WRITE),
    ("POST /streams/v1/cycle", READ_WRITE),
    ("POST /api/v1/stream/{rest...}", READ_WRITE),
)

API_PREFIXES = ("/api/", "/streams/", "/internal/")
METRICS_PATHS = ("/metrics", "/metrics/prometheus")
MAX_CACHED_PATH = 300


def _compile(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[a-z]+(?:\.\.\.)?\})", pattern)
    regex = "".join(
        (".+" if part.endswith("...}") else "[^/]+") if part.startswith("{") else re.escape(part)
        for part in parts
    )
    return re.compile(regex)


_EXACT: dict[tuple[str, str], Level] = {}
_PATTERNS: list[tuple[str, re.Pattern[str], Level]] = []
for _route, _level in ROUTES:
    _method, _path = _route.split(" ", 1)
    if "{" in _path:
        _PATTERNS.append((_method, _compile(_path), _level))
    else:
        _EXACT[(_method, _path)] = _level


def normalise(path: str) -> str:
    """The path as the router matches it: repeated slashes merged, no trailing slash."""
    if "//" in path:
        path = re.sub("/{2,}", "/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


def level_of(method: str, path: str) -> Level:
    """The level a request needs. HEAD is GET's; OPTIONS (CORS preflight) is answered by the
    gate itself before any lookup. Answers for ordinary paths are remembered (a pop's path
    names its queue, so the patterns would otherwise run on every pop)."""
    if len(path) <= MAX_CACHED_PATH:
        return _cached_level_of(method, path)
    return _level_of(method, path)


@lru_cache(maxsize=4096)
def _cached_level_of(method: str, path: str) -> Level:
    return _level_of(method, path)


def _level_of(method: str, path: str) -> Level:
    method = "GET" if method == "HEAD" else method
    path = normalise(path)
    level = _EXACT.get((method, path))
    if level is not None:
        return level
    for route_method, regex, route_level in _PATTERNS:
        if route_method == method and regex.fullmatch(path):
            return route_level
    if method == "GET" and not path.startswith(API_PREFIXES):
        return PUBLIC
    return ADMIN
