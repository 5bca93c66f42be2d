"""JSON in and out, one way for every route: orjson for speed on multi-MB push bodies, a missing or
empty body read as `{}` (quirk Q2: the Python client sends no body for an empty dict), malformed
JSON a 400 that names the problem.

An `Answer` is a reply before it meets a transport: the hot routes' lean path (queen/http/lean.py)
sends it straight over ASGI, quart routes turn it into a Response, and both put the same bytes and
headers on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from quart import Response, request

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


def as_response(answer: Answer) -> Response:
    response = Response(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers:
        response.headers[name] = value
    return response


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type=JSON)


def no_content() -> Response:
    return as_response(NO_CONTENT)


def error_response(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


async def json_body() -> Any:
    return parse_json(await raw_body())


async def raw_body() -> bytes:
    return await request.get_data(cache=False, as_text=False, parse_form_data=False)


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


async def json_object() -> dict[str, Any]:
    return parse_object(await raw_body())
