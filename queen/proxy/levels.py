"""The broker's route level table (spec §1.8 with the D-J12 additions) and the proxy's RBAC rule.

The proxy applies it before forwarding (D-P7), so a read-write user cannot reach ADMIN routes even
when the broker runs with its own auth off. Unknown paths need READ_WRITE for a non-GET and
READ_ONLY for a GET; the method rule of the original (read-only may only GET) comes after.
"""

from __future__ import annotations

import enum
import re


class Level(enum.IntEnum):
    PUBLIC = 0
    READ_ONLY = 1
    READ_WRITE = 2
    ADMIN = 3


ROLE_LEVELS = {"read-only": Level.READ_ONLY, "read-write": Level.READ_WRITE, "admin": Level.ADMIN}

_SEGMENT = r"[^/]+"
_V1 = "/api/v1"

# (methods, path pattern with {} for one segment, level); first match wins.
_TABLE: tuple[tuple[frozenset[str], str, Level], ...] = tuple(
    (frozenset(methods.split()), pattern, level)
    for methods, pattern, level in (
        ("GET", "/health", Level.PUBLIC),
        ("GET", "/metrics", Level.PUBLIC),
        ("GET", "/metrics/prometheus", Level.PUBLIC),
        ("GET", f"{_V1}/status", Level.READ_ONLY),
        ("GET", f"{_V1}/status/queues", Level.READ_ONLY),
        ("GET", f"{_V1}/status/queues/{{}}", Level.READ_ONLY),
        ("GET", f"{_V1}/status/queues/{{}}/messages", Level.READ_ONLY),
        ("GET", f"{_V1}/status/analytics", Level.READ_ONLY),
        ("GET", f"{_V1}/status/buffers", Level.READ_ONLY),
        ("GET", f"{_V1}/analytics/{{}}", Level.READ_ONLY),
        ("GET", f"{_V1}/resources/queues", Level.READ_ONLY),
        ("GET", f"{_V1}/resources/queues/{{}}", Level.READ_ONLY),
        ("DELETE", f"{_V1}/resources/queues/{{}}", Level.ADMIN),
        ("GET", f"{_V1}/resources/namespaces", Level.READ_ONLY),
        ("GET", f"{_V1}/resources/tasks", Level.READ_ONLY),
        ("GET", f"{_V1}/resources/overview", Level.READ_ONLY),
        ("GET", f"{_V1}/resources/partitions", Level.READ_ONLY),
        ("GET", f"{_V1}/messages", Level.READ_ONLY),
        ("GET", f"{_V1}/messages/{{}}/{{}}", Level.READ_ONLY),
        ("DELETE", f"{_V1}/messages/{{}}/{{}}", Level.READ_WRITE),
        ("POST", f"{_V1}/messages/{{}}/{{}}/retry", Level.READ_WRITE),
        ("POST", f"{_V1}/messages/{{}}/{{}}/dlq", Level.READ_WRITE),
        ("GET", f"{_V1}/dlq", Level.READ_ONLY),
        ("GET", f"{_V1}/traces/{{}}/{{}}", Level.READ_ONLY),
        ("GET", f"{_V1}/traces/by-name/{{}}", Level.READ_ONLY),
        ("GET", f"{_V1}/traces/names", Level.READ_ONLY),
        ("POST", f"{_V1}/traces", Level.READ_WRITE),
        ("GET", f"{_V1}/consumer-groups", Level.READ_ONLY),
        ("GET", f"{_V1}/consumer-groups/lagging", Level.READ_ONLY),
        ("GET", f"{_V1}/consumer-groups/{{}}", Level.READ_ONLY),
        ("DELETE", f"{_V1}/consumer-groups/{{}}", Level.ADMIN),
        ("DELETE", f"{_V1}/consumer-groups/{{}}/queues/{{}}", Level.ADMIN),
        ("POST", f"{_V1}/consumer-groups/{{}}/subscription", Level.READ_WRITE),
        ("POST", f"{_V1}/consumer-groups/{{}}/queues/{{}}/seek", Level.READ_WRITE),
        ("POST", f"{_V1}/consumer-groups/{{}}/queues/{{}}/partitions/{{}}/seek", Level.READ_WRITE),
        ("POST", "/streams/v1/state/get", Level.READ_ONLY),
        ("POST", "/streams/v1/queries", Level.READ_WRITE),
        ("POST", "/streams/v1/cycle", Level.READ_WRITE),
        ("POST", f"{_V1}/configure", Level.READ_WRITE),
        ("POST", f"{_V1}/push", Level.READ_WRITE),
        ("GET", f"{_V1}/pop", Level.READ_WRITE),
        ("GET", f"{_V1}/pop/queue/{{}}", Level.READ_WRITE),
        ("GET", f"{_V1}/pop/queue/{{}}/partition/{{}}", Level.READ_WRITE),
        ("POST", f"{_V1}/ack", Level.READ_WRITE),
        ("POST", f"{_V1}/ack/batch", Level.READ_WRITE),
        ("POST", f"{_V1}/transaction", Level.READ_WRITE),
        ("POST", f"{_V1}/lease/{{}}/extend", Level.READ_WRITE),
        ("POST", f"{_V1}/stream/{{}}", Level.READ_WRITE),
        ("DELETE", f"{_V1}/queues/{{}}/clear", Level.ADMIN),
        ("POST", f"{_V1}/stats/refresh", Level.ADMIN),
        ("GET POST", f"{_V1}/system/maintenance", Level.ADMIN),
        ("GET POST", f"{_V1}/system/maintenance/pop", Level.ADMIN),
        ("GET", f"{_V1}/system/shared-state", Level.ADMIN),
        ("POST", f"{_V1}/migration/{{}}", Level.ADMIN),
        ("GET", f"{_V1}/migration/status", Level.ADMIN),
        ("POST", "/internal/api/notify", Level.ADMIN),
        ("GET", "/internal/api/shared-state/stats", Level.ADMIN),
        ("GET", "/internal/api/inter-instance/stats", Level.ADMIN),
    )
)

_COMPILED = tuple(
    (methods, re.compile("^" + re.escape(pattern).replace(r"\{\}", _SEGMENT) + "$"), level)
    for methods, pattern, level in _TABLE
)


def required_level(method: str, path: str) -> Level:
    """The level a request needs; HEAD counts as GET, unlisted paths as described above."""
    verb = "GET" if method == "HEAD" else method
    for methods, pattern, level in _COMPILED:
        if verb in methods and pattern.match(path):
            return level
    if path.startswith(("/internal/", f"{_V1}/system/", f"{_V1}/migration/")):
        return Level.ADMIN
    return Level.READ_ONLY if verb == "GET" else Level.READ_WRITE


def refusal(role: str | None, method: str, path: str) -> str | None:
    """None when `role` may make this request, else the 403 detail text (spec §4.7 wording)."""
    held = ROLE_LEVELS.get(role or "", Level.PUBLIC)
    if held < required_level(method, path):
        return f"Role '{role}' cannot access {method} {path}"
    if held == Level.READ_ONLY and method != "GET":
        return f"Role '{role}' cannot perform {method} operations"
    return None
