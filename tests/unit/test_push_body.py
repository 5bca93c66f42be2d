"""The raw read of a push body (queen/http/push_body.py) answers exactly what the full parse
(validate.push_items over orjson) answers: the same items with the same payload values, or the
same 400 message. Bodies it cannot vouch for go to the full parse, so both sides of that line
are exercised here."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queen.errors import BadRequest
from queen.http import push_body, validate
from queen.http.answers import parse_json


def _outcome(read: Any, raw: bytes) -> Any:
    try:
        items = read(raw)
    except BadRequest as error:
        return ("400", str(error))
    return [
        (
            item.queue,
            item.partition,
            item.trace_id,
            # generated ids differ between two reads; a given transactionId must not
            item.transaction_id if item.transaction_id != item.message_id else None,
            orjson.loads(bytes(item.payload)),
        )
        for item in items
    ]


def _same_answer(raw: bytes) -> None:
    full = _outcome(lambda body: validate.push_items(parse_json(body)), raw)
    assert _outcome(push_body.push_items, raw) == full


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


BODIES = [
    b'{"items":[{"queue":"q","payload":{"a":1}}]}',
    b'{"items":[]}',
    b'{"items":[{"queue":"q","partition":"p","transactionId":"t","payload":[1,2.5,"x",null]}]}',
    b'{"items":[{"queue":"q"},{"queue":"q","payload":null},{"queue":"q","payload":"text"}]}',
    b'{"items":[{"queue":"q","payload":{"big":123456789012345678901234567890}}]}',
    b'{"items":[{"queue":"q","payload":  {\n "spaced" :  [ 1 , 2 ] }  }]}',
    b'{"items":[{"queue":"q","payload":{"s":"caf\xc3\xa9 \\n \\" \\\\ \\/"}}]}',
    b'{"items":[{"queue":"q","payload":{"s":"\\u00e9"}}]}',
    b'{"items":[{"queue":"q","payload":{"s":"a\\u0000b"}}]}',
    b'{"items":[{"queue":"q","payload":{"s\\u0000":1}}]}',
    b'{"items":[{"queue":"q","payload":"\\u0000"}]}',
    b'{"items":[{"queue":"q","payload":{"s":"\\ud800"}}]}',
    b'{"items":[{"queue":"q","payload":{"s":"\xff\xfe"}}]}',
    b'{"items":[{"queue":"q\\u0000"}]}',
    b'{"items":[{"queue":"q","payload":' + _deep(200).encode() + b"}]}",
    b'{"items":[{"queue":"q","payload":' + _deep(201).encode() + b"}]}",
    b'{"items":[{"queue":"q","payload":' + b"[" + b"[]," * 400 + b"[]]" + b"}]}",
    b'{"items":[{"queue":"q","payload":NaN}]}',
    b'{"items":[{"queue":"q","payload":1e400}]}',
    b'{"items":[{"queue":"q","payload":{"n":-1.5E+308,"m":2e308}}]}',
    b'{"items":[{"queue":"q","payload":[1e5000]}]}',
    b'{"items":[{"queue":"q","payload":1e131072}]}',
    b'{"items":[{"queue":"q","payload":1e-400}]}',
    b'{"items":[{"queue":"q","payload":' + b"9" * 5000 + b"}]}",
    b'{"items":[{"queue":"q","payload":' + b"9" * 99 + b"e99}]}",
    b'{"items":[{"queue":"q","payload":{"id":"x1e999","n":' + b"1" * 120 + b"}}]}",
    b'{"items":[{"queue":"q","payload":{"a":1}]}',
    b'{"items":"nope"}',
    b'{"items":[1]}',
    b'{"items":[{"queue":"q"}, "x"]}',
    b"[]",
    b"",
    b"   ",
    b'{"other":1}',
    b'{"items":[{"payload":1}]}',
    b'{"items":[{"queue":""}]}',
    b'{"items":[{"queue":7}]}',
    b'{"items":[{"queue":"' + b"q" * 256 + b'"}]}',
    b'{"items":[{"queue":"q","partition":5}]}',
    b'{"items":[{"queue":"q","partition":""}]}',
    b'{"items":[{"queue":"q","partition":"' + b"p" * 256 + b'"}]}',
    b'{"items":[{"queue":"q","transactionId":5}]}',
    b'{"items":[{"queue":"q","transactionId":""}]}',
    b'{"items":[{"queue":"q","transactionId":"' + b"t" * 256 + b'"}]}',
    b'{"items":[{"queue":"q","traceId":"not-a-uuid"}]}',
    b'{"items":[{"queue":"q","traceId":7}]}',
    b'{"items":[{"queue":"q","traceId":"8c7e5c1e-5a0c-4d7e-9a52-1f3b2c4d5e6f"}]}',
    b'{"items":[{"queue":"q","payload":{"deep":' + _deep(201).encode() + b'}},{"queue":7}]}',
    b'{"items":[{"queue":7},{"queue":"q","payload":' + _deep(201).encode() + b"}]}",
    b'{"items":[{"queue":"q","extra":{"ignored":true},"payload":{"k":"v"}}]}',
    b'{"items":[{"queue":"a","queue":"b"}]}',
]


@pytest.mark.parametrize("raw", BODIES, ids=range(len(BODIES)))
def test_raw_read_answers_as_the_full_parse(raw: bytes) -> None:
    _same_answer(raw)


def test_a_plain_payload_is_stored_as_sent() -> None:
    raw = b'{"items":[{"queue":"q","payload":{"n": 12345678901234567890123, "f": 1.50}}]}'
    [item] = push_body.push_items(raw)
    assert bytes(item.payload) == b'{"n": 12345678901234567890123, "f": 1.50}'


ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson writes
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.none() | st.text(max_size=8) | ints | st.booleans()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"queue": field_values, "payload": json_values},
            optional={"partition": field_values, "transactionId": field_values},
        ),
        max_size=4,
    )
)
def test_generated_bodies_get_the_same_answer(items: list[dict[str, Any]]) -> None:
    _same_answer(orjson.dumps({"items": items}))
