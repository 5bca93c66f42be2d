"""Payload checks read the serialised form first and walk the payload only when it might fail;
the shortcut must decide exactly as the walk does."""

from __future__ import annotations

from typing import Any

import pytest

from queen.errors import BadRequest
from queen.http.validate import MAX_PAYLOAD_DEPTH, payload


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        nested(MAX_PAYLOAD_DEPTH),
        [[] for _ in range(3 * MAX_PAYLOAD_DEPTH)],  # many brackets, shallow: walked, accepted
        {"text": "a literal backslash then u0000: \\u0000", "pad": "x" * 500},
        {"n": None, "list": [1, "two", {"three": 3.0}]},
        "plain text",
        42,
    ],
)
def test_storable_payloads_pass_unchanged(value: Any) -> None:
    assert payload(value) is value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (nested(MAX_PAYLOAD_DEPTH + 1), "nesting"),
        (nested(300), "nesting"),  # deeper than the serialiser goes
        ({"pad": "x" * 500, "deep": {"k": ["a\x00b"]}}, "NUL"),
        ({"k\x00": 1}, "NUL"),
        ("a\x00b", "NUL"),
    ],
)
def test_unstorable_payloads_are_refused(value: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        payload(value)
