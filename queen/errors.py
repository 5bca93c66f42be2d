"""Errors as types: each names the HTTP status it becomes, and `DATABASE_ERRORS` says which of them
a database failure becomes, so no handler decides a status code on its own and no exception ever
reaches a client as a traceback."""

from __future__ import annotations

from collections.abc import Callable

from queen.actors.mailbox import ActorGone
from queen.db.errors import (
    DatabaseUnavailable,
    InvalidData,
    RecordNotFound,
    StateConflict,
    TransientDatabaseError,
)


class QueenError(Exception):
    """An error with a message meant for the client."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(QueenError):
    status = 400


class NotFound(QueenError):
    status = 404


class Conflict(QueenError):
    """The request contradicts the current state (a full queue, a cursor that cannot move so)."""

    status = 409


class PayloadTooLarge(QueenError):
    status = 413


class ServiceUnavailable(QueenError):
    status = 503


class TryAgainLater(ServiceUnavailable):
    """Nothing was wrong with the request and nothing of it was done: the same request may well
    succeed in a moment, and the answer says when to try (Retry-After, in seconds: what earns it,
    a lock or statement timeout, a lost deadlock, a dropped connection, is usually over by then)."""

    retry_after_s = 1


def _unreachable(_: Exception) -> str:
    return "Service unavailable: database not reachable"


def _transient(error: Exception) -> str:
    assert isinstance(error, TransientDatabaseError)
    return f"Service unavailable: database {error.reason}, retry later"


def _as_raised(error: Exception) -> str:
    """Refusals and data errors carry a message meant for the client (the procedures' own
    RAISE text, or PostgreSQL naming the value it could not take)."""
    return str(error)


# Database failures as the client sees them: the first row whose type the error is an instance
# of decides. Errors from queen/db are types, never statuses; this is where they become statuses.
# A DatabaseError matching no row is ours, a 500 with an id in the log.
DATABASE_ERRORS: tuple[
    tuple[type[Exception], type[QueenError], Callable[[Exception], str]], ...
] = (
    (RecordNotFound, NotFound, _as_raised),
    (StateConflict, Conflict, _as_raised),
    (InvalidData, BadRequest, _as_raised),
    (TransientDatabaseError, TryAgainLater, _transient),
    (DatabaseUnavailable, TryAgainLater, _unreachable),
    (ActorGone, TryAgainLater, _unreachable),
)


def as_client_error(error: Exception) -> QueenError | None:
    """The client-facing error a database failure becomes, or None when it is our own fault."""
    for kind, client_error, message in DATABASE_ERRORS:
        if isinstance(error, kind):
            return client_error(message(error))
    return None
