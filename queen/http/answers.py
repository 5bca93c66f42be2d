"""Replies before they meet a transport, and JSON in: orjson for speed on multi-MB push bodies, a
missing or empty body read as `{}` (quirk Q2: the Python client sends no body for an empty dict),
malformed JSON a 400 that names the problem.

An `Answer` is what the lean path (queen/http/lean.py) sends straight over ASGI and what quart
routes turn into a Response (queen/http/responses.py), so both put the same bytes and headers on
the wire. Nothing here imports quart: a worker that serves only the lean path never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from queen.errors import BadRequest

JSON = "application/json"
# What quart gives a Response built without a mimetype; an empty 204 keeps saying it.
EMPTY_CONTENT_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply: status, body encoded once, and the headers beyond content type and length."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


NO_CONTENT = Answer(204, content_type=EMPTY_CONTENT_TYPE)


def json_answer(body: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(status, orjson.dumps(body), JSON, headers)


def error_answer(message: str, status: int, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return json_answer({"error": message}, status, headers)


def parse_json(raw: bytes) -> Any:
    if not raw or not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise BadRequest(f"Invalid JSON: {error}") from None


def parse_object(raw: bytes) -> dict[str, Any]:
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body
