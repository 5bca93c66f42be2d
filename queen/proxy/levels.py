"""The proxy's RBAC rule (D-P7): the broker's own route level table (queen/http/route_levels.py,
spec §1.8 with D-J12) applied to the caller's role before anything is forwarded, then the
original's method rule (read-only may only GET). So a read-write user cannot reach ADMIN routes
even when the broker runs with its own auth off.

Paths the table does not list get the broker's answer too: GETs outside the API prefixes are the
dashboard's (any signed-in role), anything else unknown needs ADMIN — stricter than D-P7's
READ_ONLY/READ_WRITE fallback, and identical to what the broker itself enforces with JWT on.
"""

from __future__ import annotations

from queen.http.route_levels import level_of
from queen.security.tokens import Level

ROLE_LEVELS = {"read-only": Level.READ_ONLY, "read-write": Level.READ_WRITE, "admin": Level.ADMIN}


def refusal(role: str | None, method: str, path: str) -> str | None:
    """None when `role` may make this request, else the 403 detail text (spec §4.7 wording)."""
    held = ROLE_LEVELS.get(role or "", Level.PUBLIC)
    if held == Level.PUBLIC:
        return f"Role '{role}' is not a queen role"
    if held < level_of(method, path):
        return f"Role '{role}' cannot access {method} {path}"
    if held == Level.READ_ONLY and method != "GET":
        return f"Role '{role}' cannot perform {method} operations"
    return None
