"""Password hashing for proxy users: bcrypt, as the original proxy stored them.

New hashes use cost 12; the original's `$2a$`/`$2b$` cost-10 hashes still verify (D-P6). A
password longer than bcrypt's 72-byte input is refused rather than silently truncated, and an
unknown user is checked against a dummy hash so the answer takes as long as for a known one.
"""

from __future__ import annotations

import bcrypt
import trio

COST = 12
MAX_BYTES = 72
MIN_LENGTH = 12
_DUMMY_HASH = bcrypt.hashpw(b"queen-proxy timing equaliser", bcrypt.gensalt(COST))


class PasswordRejected(ValueError):
    """A new password the proxy will not store; the message says why."""


def check_new(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(f"password must have at least {MIN_LENGTH} characters")
    if len(password.encode()) > MAX_BYTES:
        raise PasswordRejected(f"password must be at most {MAX_BYTES} bytes")


def hash_password(password: str) -> str:
    check_new(password)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(COST)).decode()


def _matches(password: str, stored: str | None) -> bool:
    encoded = password.encode()
    if (
        stored is None
        or len(encoded) > MAX_BYTES
        or not stored.startswith(("$2a$", "$2b$", "$2y$"))
    ):
        bcrypt.checkpw(encoded[:MAX_BYTES], _DUMMY_HASH)
        return False
    try:
        return bcrypt.checkpw(encoded, stored.encode())
    except ValueError:
        return False


async def verify(password: str, stored: str | None) -> bool:
    """True when `password` matches `stored`; always spends one bcrypt comparison, off the
    event loop (about 250 ms at cost 12)."""
    return await trio.to_thread.run_sync(_matches, password, stored)
