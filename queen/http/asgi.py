"""The HTTP callable a worker serves, built in one place.

The lean path (queen/http/lean.py) sits in front of the quart app and answers the hot routes
itself; cross-cutting layers (the access gate, request ids and metrics) are ASGI middlewares that
wrap what `build_asgi` returns here, so they cover both paths alike.
"""

from __future__ import annotations

from typing import cast

from queen.actors.root import Services
from queen.http.app import create_app
from queen.http.body_budget import BodyBudget
from queen.http.context import BODY_BUDGET_KEY
from queen.http.lean import ASGIApp, LeanRoutes


def build_asgi(services: Services) -> ASGIApp:
    app = create_app(services)
    budget = cast(BodyBudget, app.extensions[BODY_BUDGET_KEY])
    return LeanRoutes(services, budget, cast(ASGIApp, app))
