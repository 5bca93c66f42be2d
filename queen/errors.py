"""Errors as types: each names the HTTP status it becomes, in one table, so no handler decides a
status code on its own and no exception ever reaches a client as a traceback."""

from __future__ import annotations


class QueenError(Exception):
    """An error with a message meant for the client."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(QueenError):
    status = 400


class Unauthorized(QueenError):
    status = 401


class Forbidden(QueenError):
    status = 403


class NotFound(QueenError):
    status = 404


class Conflict(QueenError):
    """The request contradicts the current state (a full queue, a cursor that cannot move so)."""

    status = 409


class PayloadTooLarge(QueenError):
    status = 413


class ServiceUnavailable(QueenError):
    status = 503


# Refusals a stored procedure raises with our own SQLSTATEs, so they roll back everything the call
# did and still reach the client as the right status (see sql/006, sql/002 capacity check).
SQLSTATE_ERRORS: dict[str, type[QueenError]] = {"QN404": NotFound, "QN409": Conflict}
