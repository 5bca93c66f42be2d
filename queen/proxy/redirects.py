"""Where the proxy may send a browser after login, Google sign-in or a ForwardAuth bounce
(spec §4.12 with D-P4): a path on this host, or an http(s) URL on an allowed host. Anything else
(`//evil`, `/\\evil`, control characters, other schemes) is refused and callers fall back to `/`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_RELATIVE = re.compile(r"^/(?![/\\])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def host_allowed(host: str, allowed_hosts: tuple[str, ...], cookie_domain: str) -> bool:
    host = host.lower()
    if host in allowed_hosts:
        return True
    return bool(cookie_domain) and (host == cookie_domain or host.endswith("." + cookie_domain))


def sanitise(target: str | None, allowed_hosts: tuple[str, ...], cookie_domain: str) -> str | None:
    """`target` when it is safe to redirect to, else None."""
    if not target or "\\" in target or _CONTROL.search(target):
        return None
    if target.startswith("/"):
        return target if _RELATIVE.match(target) else None
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
        return None
    return target if host_allowed(parts.hostname, allowed_hosts, cookie_domain) else None
