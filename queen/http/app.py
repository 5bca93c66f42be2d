"""The quart-trio application: route blueprints, one error table, and an access log (CORS and
access checks are the access gate's, queen/http/access.py, which wraps this application).

Every error leaves as `{"error": "..."}` with the status its type names (queen.errors); an
unexpected exception becomes a 500 carrying only an id that also appears in the log next to the
traceback, so operators can find it and clients never see internals.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid

from quart import Request, Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from queen.actors.mailbox import ActorGone
from queen.actors.root import Services
from queen.db.errors import DatabaseError, DatabaseUnavailable
from queen.errors import QueenError, TryAgainLater, as_client_error
from queen.http import (
    consumer_groups,
    dead_letters,
    maintenance,
    messages,
    messaging,
    overview,
    resources,
    system,
    traces,
)
from queen.http.body_budget import BodyBudget, BodyRefused, BudgetedBody, budgeted_request_class
from queen.http.context import BODY_BUDGET_KEY, EXTENSION_KEY
from queen.http.responses import error_response

log = logging.getLogger("queen.http")
access_log = logging.getLogger("queen.access")


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("queen", static_folder=None)  # no static files: no /static route
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_body_bytes
    app.config["BODY_TIMEOUT"] = 120
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.extensions[EXTENSION_KEY] = services
    budget = BodyBudget(services.config.body_budget_bytes)
    app.extensions[BODY_BUDGET_KEY] = budget
    app.request_class = budgeted_request_class(budget)
    app.url_map.strict_slashes = False
    for module in (
        system,
        messaging,
        resources,
        dead_letters,
        maintenance,
        consumer_groups,
        messages,
        traces,
        overview,
    ):
        app.register_blueprint(module.blueprint)
    _install_error_table(app)
    _install_cross_cutting(app, services)
    return app


def _install_error_table(app: QuartTrio) -> None:
    @app.errorhandler(QueenError)
    async def queen_error(error: QueenError) -> Response:
        response = error_response(error.message, error.status)
        if isinstance(error, TryAgainLater):
            response.headers["Retry-After"] = str(error.retry_after_s)
        return response

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(_: RequestEntityTooLarge) -> Response:
        # The rest of the body is never read, so the connection cannot carry another request.
        response = error_response("Request body too large", 413)
        response.headers["Connection"] = "close"
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = {404: "Not found", 405: "Method not allowed"}.get(status, error.name)
        response = error_response(message, status)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            # RFC 9110 §15.5.6: a 405 names the methods the resource does accept.
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    @app.errorhandler(DatabaseError)
    @app.errorhandler(DatabaseUnavailable)
    @app.errorhandler(ActorGone)
    async def database_error(error: Exception) -> Response:
        client_error = as_client_error(error)
        if client_error is None:
            return await unexpected(error)
        if isinstance(client_error, TryAgainLater):
            log.warning("request failed: service unavailable", extra={"error": str(error)})
        return await queen_error(client_error)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "unhandled error", exc_info=error, extra={"error_id": error_id, "path": request.path}
        )
        return error_response(f"Internal server error (id {error_id})", 500)


async def _drain_body() -> None:
    """Read whatever request body the handler left unread before the response goes out: with
    quart-trio on hypercorn, answering while the body is still arriving intermittently leaves the
    response unsent (measured: 1-5 of 30 requests hung when a handler rejected a request before
    reading its body)."""
    with contextlib.suppress(Exception):
        await request.get_data(cache=False)


def _body(current: Request) -> BudgetedBody:
    body = current.body
    assert isinstance(body, BudgetedBody), "create_app installs the budgeted request class"
    return body


def _install_cross_cutting(app: QuartTrio, services: Services) -> None:
    @app.before_request
    async def start_clock() -> Response | None:
        request.environ_started = time.perf_counter()  # type: ignore[attr-defined]
        services.counters.requests += 1
        if _body(request).refused:  # nothing of the request is done (queen.http.body_budget)
            raise BodyRefused()
        return None

    @app.after_request
    async def finish(response: Response) -> Response:
        await _drain_body()
        # Every answered request passes here, error answers too; a cancelled one gives its
        # share back when its body is collected (BudgetedBody.__del__). A teardown hook would
        # cost every request quart's teardown machinery.
        _body(request).settle()
        if access_log.isEnabledFor(logging.DEBUG):
            started = getattr(request, "environ_started", time.perf_counter())
            access_log.debug(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "bytes": response.content_length,
                },
            )
        return response
