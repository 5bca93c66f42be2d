"""Reading a push body without turning its payloads into Python objects.

A payload only passes through queen: it arrives as JSON text and PostgreSQL stores it as jsonb.
Parsing every payload into dicts and lists, checking it and serialising it again cost the server
2.2 ms per 1000-message push, against 1.4 ms for msgspec to read the body with each payload left
as its raw JSON slice (timeit, ids included). So a plain body takes that path, and anything
unusual takes the full parse of `validate.push_items`, whose answers (and error messages) it
then gives:

* any `\\u` escape in the body: the escaped text may be a NUL, which jsonb cannot hold, or a
  lone surrogate, and only the parsed value tells;
* text that is not valid UTF-8 (msgspec does not look inside a payload it leaves raw);
* a payload with more brackets than MAX_PAYLOAD_DEPTH, whose nesting only the walk can measure;
* a payload that may hold a number beyond a float's range (a three-digit exponent, or a run of a
  hundred digits: every such number has one), which jsonb would store but orjson could not read
  back to deliver, so the full parse refuses it as before;
* a body msgspec rejects (nested too deep for it, too), or any item that is not an object.

What takes the raw path is therefore exactly what the full parse accepts, stored as the client
wrote it: a 25-digit integer keeps its digits in the database. (A push buffered to disk during
an outage is replayed through orjson, which reads such an integer as a float, as every push did
before this path existed.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from queen.db.items import PushItem
from queen.http import validate
from queen.http.access import identity_of
from queen.http.answers import parse_json
from queen.ids import uuid7_strs


class _Item(msgspec.Struct):
    """The fields a push item may carry, by their wire names; others are ignored, as in the
    full parse. Values are checked by `validate.push_fields`, as they are there."""

    queue: Any = None
    partition: Any = None
    payload: msgspec.Raw = msgspec.Raw(b"null")
    transactionId: Any = None
    traceId: Any = None


class _Body(msgspec.Struct):
    items: list[_Item]


_DECODER = msgspec.json.Decoder(_Body)


def push_items(
    raw: bytes, max_items: int | None = None, producer_sub: str | None = None
) -> list[PushItem]:
    """The body's items in the form `validate.push_item` gives them; more than `max_items` is
    refused (413) before any item is built, each costing far more than its bytes. Every item
    carries `producer_sub`, the verified token's subject (`producer_sub_of`); what the client
    wrote as producerSub, isEncrypted or messageId is never read."""
    items = _raw_items(raw, max_items, producer_sub)
    if items is not None:
        return items
    body = parse_json(raw)
    _check_count(body.get("items") if isinstance(body, dict) else None, max_items)
    return validate.push_items(body, producer_sub)


def producer_sub_of(scope: Mapping[str, Any]) -> str | None:
    """The producerSub a request's pushes carry: its verified token's `sub` (spec D-J11),
    None with JWT off."""
    identity = identity_of(scope)
    return identity.sub if identity is not None else None


def _check_count(items: Any, max_items: int | None) -> None:
    if max_items is not None and isinstance(items, list):
        validate.within_limit(len(items), max_items, "items")


def _raw_items(
    raw: bytes, max_items: int | None, producer_sub: str | None
) -> list[PushItem] | None:
    """The items with their payloads as sent, or None where only the full parse can answer."""
    body = _plain_body(raw)
    if body is None:
        return None
    _check_count(body.items, max_items)
    ids = uuid7_strs(len(body.items))
    items = []
    for item, message_id in zip(body.items, ids, strict=True):
        payload = bytes(item.payload)
        if (
            len(payload) > 2 * validate.MAX_PAYLOAD_DEPTH
            and payload.count(b"[") + payload.count(b"{") > validate.MAX_PAYLOAD_DEPTH
        ):
            return None
        items.append(
            validate.push_fields(
                item.queue,
                item.partition,
                item.transactionId,
                item.traceId,
                message_id,
                payload=msgspec.Raw(payload),
                producer_sub=producer_sub,
            )
        )
    if _may_overflow([item.payload for item in items]):
        return None
    return items


def _plain_body(raw: bytes) -> _Body | None:
    if b"\\u" in raw:
        return None
    try:
        raw.decode()
        return _DECODER.decode(raw)
    except (UnicodeDecodeError, msgspec.MsgspecError, RecursionError):
        # msgspec measures nesting with the interpreter's recursion limit, even in a payload it
        # leaves raw: a body nested ~1000 deep is the full parse's to refuse.
        return None


# Digits become "0" and signs go, so "1.5E+308" reads "0.0e000": one search finds any exponent of
# three digits or more, another any long run of digits. Strings holding such text (an id like
# "x1e999") only send their body to the full parse.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_LONG_EXPONENT = b"0e000"
_LONG_DIGITS = b"0" * 100


def _may_overflow(payloads: list[msgspec.Raw]) -> bool:
    """Whether some number in these payloads may lie beyond a float's range. Without a
    three-digit exponent a number needs 309 integer digits to get there; a hundred-digit limit
    keeps every accepted number below 1e199 even with a two-digit exponent. The payloads are
    read as one text (one translate, two searches), a space between them so no digit run spans
    two."""
    shape = b" ".join(payloads).translate(_DIGITS_AS_ZERO, b"+-")
    return _LONG_EXPONENT in shape or _LONG_DIGITS in shape
