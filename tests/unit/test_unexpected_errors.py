"""An exception nobody planned for answers 500 with an id, and neither the body nor the headers
carry the traceback or the exception's text; the log holds both, under the same id."""

from __future__ import annotations

import logging
import re

import pytest
from quart import Blueprint

from queen.actors.root import Services
from queen.config import Config
from queen.http.app import create_app

SECRET = "password=hunter2 at /srv/queen/internal.py line 42"


async def test_an_unexpected_error_is_a_500_with_an_id_and_no_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="queen.http")
    app = create_app(Services(Config.from_env({"PG_HOST": "unused"}), 0))
    broken = Blueprint("broken", __name__)

    @broken.get("/broken")
    async def fail() -> str:
        raise RuntimeError(SECRET)

    app.register_blueprint(broken)
    response = await app.test_client().get("/broken")
    assert response.status_code == 500
    body = await response.get_json()
    match = re.fullmatch(r"Internal server error \(id ([0-9a-f]{12})\)", body["error"])
    assert match, body
    raw = await response.get_data(as_text=True)
    assert "hunter2" not in raw and "Traceback" not in raw and "RuntimeError" not in raw
    assert "hunter2" not in str(response.headers)
    logged = [r for r in caplog.records if getattr(r, "error_id", None) == match.group(1)]
    assert logged and logged[0].exc_info is not None
