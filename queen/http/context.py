"""How a handler finds its worker's actors: the Services object stored on the app at start-up."""

from __future__ import annotations

from typing import cast

from quart import current_app

from queen.actors.root import Services

EXTENSION_KEY = "queen"


def services() -> Services:
    return cast(Services, current_app.extensions[EXTENSION_KEY])
