"""The HTTP callable a worker serves, built in one place.

The lean path (queen/http/lean.py) sits in front of the quart app and answers the hot routes
itself; the quart app is built on the first request the lean path leaves to it
(queen/http/lazy_app.py), so quart is only imported then. Cross-cutting layers (the access gate,
request ids and metrics) are ASGI middlewares that wrap what `build_asgi` returns here, so they
cover both paths alike.
"""

from __future__ import annotations

from typing import cast

from queen.actors.root import Services
from queen.http.body_budget import BodyBudget
from queen.http.lazy_app import LazyApp
from queen.http.lean import ASGIApp, LeanRoutes
from queen.http.lifespan import App
from queen.http.web_root import check_dashboard_root


def build_asgi(services: Services) -> ASGIApp:
    budget = BodyBudget(services.config.body_budget_bytes)
    check_dashboard_root(services.config.webapp_root)

    def build_quart() -> App:
        from queen.http.app import create_app  # noqa: PLC0415 - the import is what is deferred

        return create_app(services, budget)

    return LeanRoutes(services, budget, cast(ASGIApp, LazyApp(build_quart)))
