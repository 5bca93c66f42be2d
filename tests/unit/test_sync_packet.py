"""The cluster-sync datagram: every message type survives a round trip, each packet type is byte
for byte what the spec's layout says (fixtures written out by hand from security-cluster §3.4-3.7,
not produced by the codec), and whatever is not a good packet is refused with its reason."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queen.sync import packet as codec
from queen.sync.messages import (
    Heartbeat,
    MaintenanceSet,
    Message,
    MessageAvailable,
    PartitionFree,
    QueueConfigDelete,
    QueueConfigSet,
    from_packet,
    to_payload,
)
from queen.sync.packet import MessageType, Packet, Refused

SECRET = b"correct horse battery staple, thirty-two+"
SENDER = "queen-a:6633"
SESSION = "0123456789abcdef"
TS = 1_765_000_000_000

names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=60)
stamps = st.integers(min_value=0, max_value=2**63 - 1)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(MessageAvailable, names, st.text(max_size=40), stamps),
    st.builds(PartitionFree, names, st.text(max_size=40), st.text(max_size=40), stamps),
    st.builds(Heartbeat, st.text("0123456789abcdef", min_size=16, max_size=16), stamps, stamps),
    st.builds(
        QueueConfigSet,
        names,
        st.dictionaries(
            st.sampled_from(["lease_time", "retry_limit", "encryption_enabled", "namespace_name"]),
            st.one_of(st.integers(0, 2**31 - 1), st.booleans(), st.text(max_size=20)),
        ),
        st.integers(0, 2**32),
    ),
    st.builds(QueueConfigDelete, names),
    st.builds(MaintenanceSet, st.booleans(), stamps, st.booleans()),
)


@given(
    message=messages,
    sequence=st.integers(1, codec.MAX_SEQUENCE),
    secret=st.sampled_from([b"", SECRET]),
)
def test_every_message_type_survives_a_round_trip(
    message: Message, sequence: int, secret: bytes
) -> None:
    type_code, payload = to_payload(message)
    datagram = codec.encode(Packet(type_code, SENDER, SESSION[:15], sequence, payload), secret)
    assert len(datagram) <= codec.MAX_DATAGRAM
    decoded = codec.decode(datagram, secret)
    assert (decoded.type, decoded.sender_id, decoded.session_id, decoded.sequence) == (
        type_code,
        SENDER,
        SESSION[:15],
        sequence,
    )
    assert from_packet(decoded) == message


def _header(type_code: int, body: bytes, sequence: int) -> bytes:
    """Offsets 0-91 as the spec's table lays them out, signature zeroed."""
    return (
        bytes([1, type_code])
        + len(body).to_bytes(2, "big")
        + bytes(32)
        + SENDER.encode().ljust(32, b"\0")
        + SESSION[:15].encode().ljust(16, b"\0")
        + sequence.to_bytes(8, "big")
    )


def _signed(unsigned: bytes) -> bytes:
    mac = hmac.new(SECRET, unsigned[:4] + unsigned[36:], hashlib.sha256).digest()
    return unsigned[:4] + mac + unsigned[36:]


def _str(text: str) -> bytes:
    return bytes([0xA0 | len(text)]) + text.encode()


TS_BYTES = b"\xcf" + TS.to_bytes(8, "big")  # uint64: the smallest type holding it
FIXTURES: list[tuple[Message, int, bytes]] = [
    (
        MessageAvailable("orders", "Default", TS),
        1,
        b"\x83"
        + _str("partition")
        + _str("Default")
        + _str("queue")
        + _str("orders")
        + _str("ts")
        + TS_BYTES,
    ),
    (
        PartitionFree("orders", "", "billing", TS),
        2,
        b"\x84"
        + _str("consumerGroup")
        + _str("billing")
        + _str("partition")
        + _str("")
        + _str("queue")
        + _str("orders")
        + _str("ts")
        + TS_BYTES,
    ),
    (
        Heartbeat(SESSION, 300, TS),
        3,
        b"\x83"
        + _str("sequence")
        + b"\xcd\x01\x2c"
        + _str("session_id")
        + b"\xb0"
        + SESSION.encode()
        + _str("ts")
        + TS_BYTES,
    ),
    (
        QueueConfigSet("orders", {"retry_limit": 3, "lease_time": 300}, 0),
        10,
        b"\x83"
        + _str("config")
        + b"\x82"
        + _str("lease_time")
        + b"\xcd\x01\x2c"
        + _str("retry_limit")
        + b"\x03"
        + _str("queue")
        + _str("orders")
        + _str("version")
        + b"\x00",
    ),
    (QueueConfigDelete("orders"), 11, b"\x81" + _str("queue") + _str("orders")),
    (
        MaintenanceSet(True, TS),
        40,
        b"\x82" + _str("enabled") + b"\xc3" + _str("ts") + TS_BYTES,
    ),
    (
        MaintenanceSet(False, TS, pop=True),
        41,
        b"\x82" + _str("enabled") + b"\xc2" + _str("ts") + TS_BYTES,
    ),
]


@pytest.mark.parametrize(("message", "type_code", "body"), FIXTURES)
def test_each_packet_type_matches_the_spec_layout_byte_for_byte(
    message: Message, type_code: int, body: bytes
) -> None:
    sequence = 0x0102030405060708
    expected = _signed(_header(type_code, body, sequence) + body)
    code, payload = to_payload(message)
    assert code == type_code
    assert codec.encode(Packet(code, SENDER, SESSION, sequence, payload), SECRET) == expected
    assert from_packet(codec.decode(expected, SECRET)) == message


def test_without_a_secret_the_signature_field_is_zero_and_unchecked() -> None:
    code, payload = to_payload(QueueConfigDelete("q"))
    datagram = codec.encode(Packet(code, SENDER, SESSION, 1, payload), b"")
    assert datagram[4:36] == bytes(32)
    assert codec.decode(_signed(datagram), b"").payload == {"queue": "q"}


def _good() -> bytes:
    code, payload = to_payload(MessageAvailable("orders", "", TS))
    return codec.encode(Packet(code, SENDER, SESSION, 9, payload), SECRET)


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (_good()[:91], "truncated"),
        (b"", "truncated"),
        (_good() + bytes(codec.MAX_DATAGRAM), "oversized"),
        (b"\x02" + _good()[1:], "version"),
        (_good()[:40] + b"X" + _good()[41:], "signature"),
        (_good()[:-1] + bytes([_good()[-1] ^ 1]), "signature"),
        (_signed(_header(1, b"\x81", 1) + b"\x81"), "malformed"),  # a map missing its entry
        (_signed(_header(1, b"\x93\x01\x02\x03", 1) + b"\x93\x01\x02\x03"), "malformed"),
        (_signed(_header(1, b"\x80", 1) + b"\x80\x80"), "malformed"),  # length disagrees
    ],
)
def test_bad_datagrams_are_refused_with_their_reason(datagram: bytes, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        codec.decode(datagram, SECRET)
    assert refused.value.reason == reason


def test_a_payload_too_large_for_the_wire_is_not_sent() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        codec.encode(Packet(1, SENDER, SESSION, 1, {"queue": "q" * 1400}), SECRET)


def test_header_is_92_bytes_in_network_order() -> None:
    assert codec.HEADER_SIZE == 92
    assert struct.unpack_from(">Q", _good(), 84) == (9,)


def test_unknown_types_and_unusable_fields_read_as_nothing() -> None:
    assert from_packet(Packet(MessageType.CONSUMER_REGISTERED, SENDER, SESSION, 1, {})) is None
    assert from_packet(Packet(MessageType.MESSAGE_AVAILABLE, SENDER, SESSION, 1, {"q": 1})) is None
    bad_flag = {"enabled": "yes", "ts": TS}
    assert (
        from_packet(Packet(MessageType.MAINTENANCE_MODE_SET, SENDER, SESSION, 1, bad_flag)) is None
    )
