"""What can go wrong with a database call, as types the callers decide on.

Every PostgreSQL error becomes one of these where it is first seen (the connection slot, via
`from_sqlstate`), so no caller reads SQLSTATEs: the HTTP layer keeps one table from these types
to statuses (queen/errors.py), the push path falls back to its disk buffer on whatever
`is_availability_error` accepts, and pops answer empty. Nothing here knows about HTTP.
"""

from __future__ import annotations


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached right now (connection refused, lost, or backing off)."""


class DatabaseError(Exception):
    """PostgreSQL answered the call with an error; the subclasses say whose fault it is. A plain
    DatabaseError is ours: a statement or a procedure that should not have failed."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class Refused(DatabaseError):
    """A procedure refused the request with one of our own SQLSTATEs, rolling back all it did."""


class RecordNotFound(Refused):
    """QN404: the named message, queue or partition does not exist."""


class StateConflict(Refused):
    """QN409: the request contradicts the current state (a full queue, a cursor that cannot move
    that way)."""


class EncryptionRequired(Refused):
    """QN412: a push would have stored a plaintext payload in a queue with encryptionEnabled
    (sql/functions/04_push.sql); the caller's view of the queue's flag was stale."""


class InvalidData(DatabaseError):
    """SQLSTATE class 22: a value the request supplied cannot be stored or compared as given
    (out of range, malformed for its type). Retrying the same request fails the same way."""


class TransientDatabaseError(DatabaseError):
    """The request was fine but PostgreSQL could not finish it now, and rolled it back: a timeout,
    a lock it could not get, a deadlock or serialization failure it was chosen to lose, resources
    exhausted, a server going down. The same request may well succeed in a moment."""

    def __init__(self, message: str, sqlstate: str | None = None, reason: str = "busy") -> None:
        super().__init__(message, sqlstate)
        self.reason = reason


# Our own SQLSTATEs, raised by the procedures in sql/ (see sql/functions/10_messages.sql).
_REFUSALS: dict[str, type[Refused]] = {
    "QN404": RecordNotFound,
    "QN409": StateConflict,
    "QN412": EncryptionRequired,
}

# Transient SQLSTATEs, by exact code or by class prefix, with the short reason a client is told.
_TRANSIENT: dict[str, str] = {
    "57014": "statement timeout",
    "55P03": "lock timeout",
    "40P01": "deadlock",
    "40001": "serialization failure",
    "53": "insufficient resources",  # out of memory, shared memory, lock table, connections
    "57P01": "server shutting down",
    "57P02": "server restarting",
    "57P03": "server starting",
    "25006": "read-only server",  # a standby, or a primary being demoted
    "08": "connection failure",
}

_INVALID_DATA_CLASS = "22"


def from_sqlstate(message: str, sqlstate: str | None) -> DatabaseError:
    """The typed error for PostgreSQL's answer `message` with `sqlstate`."""
    if not sqlstate:
        return DatabaseError(message)
    refusal = _REFUSALS.get(sqlstate)
    if refusal is not None:
        return refusal(message, sqlstate)
    reason = _TRANSIENT.get(sqlstate) or _TRANSIENT.get(sqlstate[:2])
    if reason is not None:
        return TransientDatabaseError(message, sqlstate, reason)
    if sqlstate.startswith(_INVALID_DATA_CLASS):
        return InvalidData(message, sqlstate)
    return DatabaseError(message, sqlstate)


def is_availability_error(error: BaseException) -> bool:
    """True when retrying later (or buffering to disk) is the right answer to `error`. An actor
    that went away mid-call (`ActorGone`) counts too; it is known by name, as db may not import
    the actors."""
    if isinstance(error, DatabaseUnavailable | TransientDatabaseError):
        return True
    return type(error).__name__ == "ActorGone"
