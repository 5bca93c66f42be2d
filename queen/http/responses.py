"""quart's side of the replies: an `Answer` (queen/http/answers.py) turned into a Response, JSON
responses, and request bodies read as bytes or JSON, the same way for every quart route.
"""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response, request

from queen.http.answers import JSON, NO_CONTENT, Answer, parse_json, parse_object


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


async def json_object() -> dict[str, Any]:
    return parse_object(await raw_body())
