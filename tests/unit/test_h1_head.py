"""The fast path's request-head reader: it serves the plain shape and declines everything else,
and what it accepts, h11 (hypercorn's parser) reads the same way."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queen.http.h1_head import parse_head

PLAIN = (
    b"POST /api/v1/push?x=1&y=%20 HTTP/1.1\r\n"
    b"Host: localhost:6632\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 17\r\n"
    b"X-Empty:\r\n"
    b"User-Agent:  queen-client/0.15 \t\r\n"
    b"\r\n"
)


def test_a_plain_request_is_read_whole() -> None:
    head = parse_head(PLAIN)
    assert head is not None
    assert (head.method, head.path, head.query) == ("POST", b"/api/v1/push", b"x=1&y=%20")
    assert head.headers == [
        (b"host", b"localhost:6632"),
        (b"content-type", b"application/json"),
        (b"content-length", b"17"),
        (b"x-empty", b""),
        (b"user-agent", b"queen-client/0.15"),
    ]
    assert head.content_length == 17
    assert head.close is False


def test_connection_close_is_noticed() -> None:
    head = parse_head(b"GET /health HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n")
    assert head is not None and head.close and head.content_length == 0


def test_close_in_any_connection_header_counts() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n"
    head = parse_head(raw)
    assert head is not None and head.close


def test_whitespace_around_a_value_is_dropped_and_inside_kept() -> None:
    raw = (
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \t"
        + b" " * 10_000
        + b"a \t b"
        + b" " * 10_000
        + b"\r\n\r\n"
    )
    head = parse_head(raw)
    assert head is not None and head.headers[1] == (b"x-a", b"a \t b")


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health HTTP/1.0\r\nHost: h\r\n\r\n",
        b"GET /health HTTP/2.0\r\nHost: h\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"HEAD /health HTTP/1.1\r\nHost: h\r\n\r\n",
        b"TRACE / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"get /health HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://h/health HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: " + b"0" * 5000 + b"1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: AAA\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Bare: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n: empty-name\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    ],
)
def test_anything_but_the_plain_shape_is_declined(head: bytes) -> None:
    assert parse_head(head) is None


_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_names = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=12).map(str.encode)
_values = st.binary(max_size=20).map(
    lambda raw: bytes(b if (0x20 <= b <= 0x7E or b >= 0x80 or b == 0x09) else 0x41 for b in raw)
)
_paths = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], max_size=20).map(
    lambda text: ("/" + text).encode()
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]),
    target=_paths,
    fields=st.lists(st.tuples(_names, _values), max_size=6),
)
def test_what_the_fast_reader_accepts_h11_reads_alike(
    method: bytes, target: bytes, fields: list[tuple[bytes, bytes]]
) -> None:
    raw = method + b" " + target + b" HTTP/1.1\r\nHost: h\r\n"
    raw += b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n"
    head = parse_head(raw)
    if head is None:
        return
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(raw)
    event = connection.next_event()
    assert isinstance(event, h11.Request)
    assert event.method == method
    assert head.path + (b"?" + head.query if b"?" in event.target else b"") == event.target
    assert [(name, value) for name, value in event.headers] == head.headers
