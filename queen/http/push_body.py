"""Reading a push body without turning its payloads into Python objects.

A payload only passes through queen: it arrives as JSON text and PostgreSQL stores it as jsonb.
Parsing every payload into dicts and lists, checking it and serialising it again cost the
server about as much CPU as the rest of a 1000-message push (the body's parse 0.7 ms, validating
and re-serialising 1.9 ms, against 0.3 ms for msgspec to read the body with each payload left as
its raw JSON slice). So a plain body takes that path, and anything unusual takes the full parse
of `validate.push_items`, whose answers (and error messages) it then gives:

* any `\\u` escape in the body: the escaped text may be a NUL, which jsonb cannot hold, or a
  lone surrogate, and only the parsed value tells;
* text that is not valid UTF-8 (msgspec does not look inside a payload it leaves raw);
* a payload with more brackets than MAX_PAYLOAD_DEPTH, whose nesting only the walk can measure;
* a body msgspec rejects, or any item that is not an object.

A raw payload is stored as written, so its numbers keep their digits (a full parse would have
turned a 20-digit integer into a float). A number too large for a float is stored too, and
read back by `queen.json_text` without loss.
"""

from __future__ import annotations

from typing import Any

import msgspec

from queen.http import validate
from queen.http.responses import parse_json
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


def push_items(raw: bytes) -> list[dict[str, Any]]:
    """The body's items in the form `validate.push_item` gives them."""
    body = _plain_body(raw)
    if body is None:
        return validate.push_items(parse_json(raw))
    ids = uuid7_strs(len(body.items))
    items = []
    for item, message_id in zip(body.items, ids, strict=True):
        fields = validate.push_fields(
            item.queue, item.partition, item.transactionId, item.traceId, message_id
        )
        payload = bytes(item.payload)
        if (
            len(payload) > 2 * validate.MAX_PAYLOAD_DEPTH
            and payload.count(b"[") + payload.count(b"{") > validate.MAX_PAYLOAD_DEPTH
        ):
            return validate.push_items(parse_json(raw))
        fields["payload"] = payload
        items.append(fields)
    return items


def _plain_body(raw: bytes) -> _Body | None:
    if b"\\u" in raw:
        return None
    try:
        raw.decode()
        return _DECODER.decode(raw)
    except (UnicodeDecodeError, msgspec.MsgspecError):
        return None
