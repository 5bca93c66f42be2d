"""Reading JSON that queen stored: jsonb from PostgreSQL, records of the disk buffer.

orjson reads nearly all of it, fast. What it refuses is a number beyond a float's range (1e400):
valid JSON, accepted by jsonb, and stored as sent since payloads are no longer re-serialised on
the way in (`queen.http.push_body`). Such a document is read by the standard library instead,
and each number orjson could not write back is kept as the text PostgreSQL wrote (an
`orjson.Fragment`, written back verbatim), so the message is delivered with its digits rather
than failing every pop that meets it. Other numbers stay numbers, for the code that reads them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

_INT_RANGE = range(-(2**63), 2**64)  # what orjson writes as an integer


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text, parse_float=_float, parse_int=_int)


def _float(text: str) -> float | orjson.Fragment:
    value = float(text)
    return value if math.isfinite(value) else orjson.Fragment(text)


def _int(text: str) -> int | orjson.Fragment:
    value = int(text)
    return value if value in _INT_RANGE else orjson.Fragment(text)
