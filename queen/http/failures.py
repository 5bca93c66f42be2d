"""The one error table of the HTTP layer, and its access log: an exception raised while answering
becomes the answer its type names (queen.errors), for quart's error handlers and the lean path
alike.

Every error leaves as `{"error": "..."}`; an unexpected exception becomes a 500 carrying only an
id that also appears in the log next to the traceback, so operators can find it and clients never
see internals.
"""

from __future__ import annotations

import logging
import uuid

from queen.actors.mailbox import ActorGone
from queen.db.errors import DatabaseError, DatabaseUnavailable
from queen.errors import QueenError, TryAgainLater, as_client_error
from queen.http.answers import Answer, error_answer

log = logging.getLogger("queen.http")


def client_answer(error: QueenError) -> Answer:
    headers: tuple[tuple[str, str], ...] = ()
    if isinstance(error, TryAgainLater):
        headers = (("Retry-After", str(error.retry_after_s)),)
    return error_answer(error.message, error.status, headers)


def failure_answer(error: Exception, path: str) -> Answer:
    """The answer to any exception a handler raised while serving `path`."""
    if isinstance(error, QueenError):
        return client_answer(error)
    if isinstance(error, DatabaseError | DatabaseUnavailable | ActorGone):
        client_error = as_client_error(error)
        if client_error is not None:
            if isinstance(client_error, TryAgainLater):
                log.warning("request failed: service unavailable", extra={"error": str(error)})
            return client_answer(client_error)
    error_id = uuid.uuid4().hex[:12]
    log.error("unhandled error", exc_info=error, extra={"error_id": error_id, "path": path})
    return error_answer(f"Internal server error (id {error_id})", 500)


# The rest of the body is never read, so the connection cannot carry another request.
TOO_LARGE = error_answer("Request body too large", 413, (("Connection", "close"),))
