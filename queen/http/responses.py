"""JSON in and out, one way for every route: orjson for speed on multi-MB push bodies, a missing or
empty body read as `{}` (quirk Q2: the Python client sends no body for an empty dict), malformed
JSON a 400 that names the problem."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response, request

from queen.errors import BadRequest


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


def no_content() -> Response:
    return Response(b"", status=204)


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


async def json_object() -> dict[str, Any]:
    body = await json_body()
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body
