"""The quart-trio application: route blueprints and the error table (queen.http.failures).
It serves every route but the hot ones, which the lean path in front of it answers
(queen.http.asgi); a hot route's request quart still sees (HEAD, a trailing slash, a GET with a
body) gets the same answer from the same handler core. CORS and access checks are the access
gate's (queen/http/access.py); request ids, latency and the access log wrap everything
(queen/metrics/asgi.py).
"""

from __future__ import annotations

import contextlib

from quart import Request, Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from queen.actors.root import Services
from queen.http import (
    cluster,
    consumer_groups,
    dead_letters,
    maintenance,
    messages,
    messaging_routes,
    overview,
    prometheus,
    resources,
    status,
    streams,
    system,
    traces,
    web,
)
from queen.http.body_budget import BODY_TIMEOUT_S, BodyBudget, BodyRefused
from queen.http.context import BODY_BUDGET_KEY, EXTENSION_KEY
from queen.http.failures import TOO_LARGE, failure_answer
from queen.http.quart_body import BudgetedBody, budgeted_request_class
from queen.http.responses import as_response, error_response
from queen.http.web_root import dashboard_root


def create_app(services: Services, budget: BodyBudget | None = None) -> QuartTrio:
    """`budget`: the worker's body budget, shared with the lean path; an app served alone (in
    tests) gets its own."""
    if budget is None:
        budget = BodyBudget(services.config.body_budget_bytes)
    app = QuartTrio("queen", static_folder=None)  # no static files: no /static route
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_body_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT_S
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.extensions[EXTENSION_KEY] = services
    app.extensions[BODY_BUDGET_KEY] = budget
    app.request_class = budgeted_request_class(budget)
    app.url_map.strict_slashes = False
    for module in (
        system,
        messaging_routes,
        resources,
        dead_letters,
        maintenance,
        consumer_groups,
        messages,
        traces,
        overview,
        streams,
        status,
        prometheus,
        cluster,
    ):
        app.register_blueprint(module.blueprint)
    web.install(app, dashboard_root(services.config.webapp_root))
    app.register_blueprint(web.blueprint)  # last: its fallback routes what nothing else does
    _install_error_table(app)
    _install_cross_cutting(app, services)
    return app


def _install_error_table(app: QuartTrio) -> None:
    """quart's own HTTP errors are answered here; everything else goes through the one table
    (queen.http.failures) the lean path uses too."""

    @app.errorhandler(RequestEntityTooLarge)
    async def too_large(_: RequestEntityTooLarge) -> Response:
        return as_response(TOO_LARGE)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = {404: "Not found", 405: "Method not allowed"}.get(status, error.name)
        response = error_response(message, status)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            # RFC 9110 §15.5.6: a 405 names the methods the resource does accept.
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    @app.errorhandler(Exception)
    async def failure(error: Exception) -> Response:
        return as_response(failure_answer(error, request.path))


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
    async def admit() -> Response | None:
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
        return response
