"""The error taxonomy: what each SQLSTATE becomes (queen/db/errors.py), and what each of those
types becomes for a client (queen/errors.py): refusals 404/409, data the request supplied 400,
anything transient a 503 the client may retry after a second, our own faults none (a 500)."""

from __future__ import annotations

import pytest

from queen.actors.mailbox import ActorGone
from queen.db.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidData,
    RecordNotFound,
    StateConflict,
    TransientDatabaseError,
    from_sqlstate,
    is_availability_error,
)
from queen.errors import (
    BadRequest,
    Conflict,
    NotFound,
    TryAgainLater,
    as_client_error,
)


@pytest.mark.parametrize(
    ("sqlstate", "reason"),
    [
        ("57014", "statement timeout"),
        ("55P03", "lock timeout"),
        ("40P01", "deadlock"),
        ("40001", "serialization failure"),
        ("53200", "insufficient resources"),  # out of memory (and out of shared memory/locks)
        ("53300", "insufficient resources"),  # too many connections
        ("57P01", "server shutting down"),
        ("25006", "read-only server"),
        ("08006", "connection failure"),
    ],
)
def test_transient_states_are_retryable(sqlstate: str, reason: str) -> None:
    error = from_sqlstate("canceling statement", sqlstate)
    assert type(error) is TransientDatabaseError
    assert (error.sqlstate, error.reason) == (sqlstate, reason)
    assert is_availability_error(error)
    client = as_client_error(error)
    assert isinstance(client, TryAgainLater)
    assert (client.status, client.retry_after_s) == (503, 1)
    assert reason in client.message


@pytest.mark.parametrize(
    ("sqlstate", "kind", "client_kind"),
    [
        ("QN404", RecordNotFound, NotFound),
        ("QN409", StateConflict, Conflict),
        ("22P02", InvalidData, BadRequest),  # invalid text representation
        ("22003", InvalidData, BadRequest),  # numeric value out of range
    ],
)
def test_refusals_and_bad_data_are_the_requests_fault(
    sqlstate: str, kind: type[DatabaseError], client_kind: type[Exception]
) -> None:
    error = from_sqlstate("Queue not found", sqlstate)
    assert type(error) is kind
    assert not is_availability_error(error)
    client = as_client_error(error)
    assert type(client) is client_kind
    assert client is not None and client.message == "Queue not found"


@pytest.mark.parametrize("sqlstate", [None, "", "42883", "23505", "XX000", "P0001"])
def test_anything_else_is_our_own_fault(sqlstate: str | None) -> None:
    """A missing function, a unique violation, an internal error or an unexpected RAISE are bugs
    to find in the log (a 500 with an id), not something a client can fix or wait out."""
    error = from_sqlstate("boom", sqlstate)
    assert type(error) is DatabaseError
    assert not is_availability_error(error)
    assert as_client_error(error) is None


@pytest.mark.parametrize("error", [DatabaseUnavailable("refused"), ActorGone()])
def test_unreachable_is_retryable_too(error: Exception) -> None:
    assert is_availability_error(error)
    client = as_client_error(error)
    assert isinstance(client, TryAgainLater)
    assert client.message == "Service unavailable: database not reachable"


def test_errors_that_are_not_the_databases_have_no_client_form() -> None:
    assert as_client_error(ValueError("x")) is None
    assert not is_availability_error(ValueError("x"))
