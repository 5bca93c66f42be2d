"""How a handler finds its worker's actors (the Services object stored on the app at start-up)
and its request-body budget."""

from __future__ import annotations

from typing import cast

from quart import current_app

from queen.actors.root import Services
from queen.http.body_budget import BodyBudget

EXTENSION_KEY = "queen"
BODY_BUDGET_KEY = "queen.body_budget"


def services() -> Services:
    return cast(Services, current_app.extensions[EXTENSION_KEY])


def body_budget() -> BodyBudget:
    return cast(BodyBudget, current_app.extensions[BODY_BUDGET_KEY])
