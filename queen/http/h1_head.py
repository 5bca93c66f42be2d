"""Reading an HTTP/1.1 request head, for the requests queen serves on its own fast path.

Only the plain shape every client here sends is accepted: an origin-form target, HTTP/1.1, token
header names, header values of visible characters, spaces and tabs. Anything else (HTTP/1.0 or 2,
absolute-form targets, obsolete line folding, bare LF line ends, control characters, HEAD and
CONNECT and TRACE, framing other than Content-Length) gives `None`, and the connection is handed
whole to hypercorn, whose h11 parser answers it as it always did. So the two readers never need
to agree on an edge case: the fast one declines every edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# RFC 9110 token characters (header names: read here, checked in answers by h1_connection) and
# field-value characters (obs-text included, as h11).
TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEAD = re.compile(
    rb"(GET|POST|PUT|DELETE|PATCH|OPTIONS) (/[\x21-\x7e]*) HTTP/1\.1\r\n"
    rb"((?:" + TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
)
# Linear on purpose: a lazy value group followed by optional whitespace backtracks quadratically
# over a long run of spaces (found in review: 0.8 s for one 32 KB header line).
_FIELD = re.compile(rb"(" + TOKEN + rb"):([^\r\n]*)\r\n")
_MAX_LENGTH_DIGITS = 18  # past this, int() would be slow or refused; h11 answers such heads 400

# Framing and protocol switches the fast path leaves to hypercorn.
_DECLINED = frozenset((b"transfer-encoding", b"expect", b"upgrade", b"http2-settings"))
MAX_HEAD_BYTES = 16 * 1024  # hypercorn's own limit for an incomplete request head


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    path: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]  # names lowercased, as ASGI wants them
    content_length: int
    close: bool  # the client asked for the connection to end after this answer


def parse_head(head: bytes) -> RequestHead | None:
    """`head` ends with the blank line. None: not a request this path serves."""
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    method, target, block = match.groups()
    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    close = False
    host = False
    for raw_name, raw_value in _FIELD.findall(block):
        name, value = raw_name.lower(), raw_value.strip(b" \t")
        if name == b"content-length":
            if content_length is not None or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                return None
            content_length = int(value)
        elif name == b"host":
            if host:
                return None
            host = True
        elif name == b"connection":
            tokens = {token.strip() for token in value.lower().split(b",")}
            if b"upgrade" in tokens:
                return None
            close = close or b"close" in tokens  # h11 reads every Connection header
        elif name in _DECLINED:
            return None
        headers.append((name, value))
    if not host:  # HTTP/1.1 requires Host; h11 answers its absence with 400
        return None
    path, _, query = target.partition(b"?")
    return RequestHead(method.decode(), path, query, headers, content_length or 0, close)
