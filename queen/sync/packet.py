"""The cluster-sync datagram, protocol version 1 of the original broker, as pure functions.

A datagram is a fixed 92-byte header (version, type, payload length, HMAC-SHA256 signature,
sender id, session id, sequence) followed by a MessagePack map. Keeping the layout byte for byte
lets original and queen instances share a cluster during a migration (spec security-cluster
§3.4-3.7, D-U1). Nothing here touches a socket: the endpoint (queen/sync/endpoint.py) moves bytes,
this module turns them into `Packet`s and back, and says why a datagram is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

VERSION = 1
HEADER = struct.Struct(">BBH32s32s16sQ")
HEADER_SIZE = HEADER.size  # 92
MAX_PAYLOAD = 1308
MAX_DATAGRAM = HEADER_SIZE + MAX_PAYLOAD  # 1400
SIGNATURE_OFFSET = 4
SIGNATURE_SIZE = 32
SIGNED_TAIL_OFFSET = SIGNATURE_OFFSET + SIGNATURE_SIZE  # 36
SENDER_ID_BYTES = 31
SESSION_ID_BYTES = 15
MAX_SEQUENCE = 2**64 - 1


class MessageType(IntEnum):
    """The original's type codes; several are never sent by it and are only ever counted."""

    MESSAGE_AVAILABLE = 1
    PARTITION_FREE = 2
    HEARTBEAT = 3
    QUEUE_CONFIG_SET = 10
    QUEUE_CONFIG_DELETE = 11
    CONSUMER_REGISTERED = 20
    CONSUMER_DEREGISTERED = 21
    PARTITION_DELETED = 25
    LEASE_HINT_ACQUIRED = 30
    LEASE_HINT_RELEASED = 31
    MAINTENANCE_MODE_SET = 40
    POP_MAINTENANCE_MODE_SET = 41


class Refused(ValueError):
    """A datagram that is not a usable packet; `reason` is the counter it is dropped under."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Packet:
    type: int
    sender_id: str
    session_id: str
    sequence: int
    payload: Mapping[str, Any]


def sign(secret: bytes, datagram: bytes) -> bytes:
    """HMAC over bytes 0-3 and 36 to the end: everything but the signature field itself."""
    mac = hmac.new(secret, datagram[:SIGNATURE_OFFSET], hashlib.sha256)
    mac.update(datagram[SIGNED_TAIL_OFFSET:])
    return mac.digest()


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """Keys sorted at every level, integers in their smallest form: the original's encoding, so
    a fixture built by hand from the spec compares byte for byte."""
    encoded: bytes = msgpack.packb(_sorted(payload), use_bin_type=True)
    return encoded


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    return value


def encode(packet: Packet, secret: bytes) -> bytes:
    """The datagram for `packet`; signed when `secret` is non-empty, else 32 zero bytes."""
    body = encode_payload(packet.payload)
    if len(body) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(body)} bytes exceeds {MAX_PAYLOAD}")
    if not 0 <= packet.sequence <= MAX_SEQUENCE:
        raise ValueError("sequence out of range")
    header = HEADER.pack(
        VERSION,
        packet.type,
        len(body),
        bytes(SIGNATURE_SIZE),
        _fixed_ascii(packet.sender_id, SENDER_ID_BYTES),
        _fixed_ascii(packet.session_id, SESSION_ID_BYTES),
        packet.sequence,
    )
    datagram = header + body
    if not secret:
        return datagram
    return datagram[:SIGNATURE_OFFSET] + sign(secret, datagram) + datagram[SIGNED_TAIL_OFFSET:]


def _fixed_ascii(text: str, limit: int) -> bytes:
    """At most `limit` ASCII bytes; the struct format NUL-pads to the field's width."""
    return text.encode("ascii", "replace")[:limit]


def decode(datagram: bytes, secret: bytes) -> Packet:
    """The packet in `datagram`, or `Refused` naming why not. Without a secret nothing is
    verified (the original's behaviour; queen refuses to run sync that way unless told to)."""
    if len(datagram) < HEADER_SIZE:
        raise Refused("truncated")
    if len(datagram) > MAX_DATAGRAM:
        raise Refused("oversized")
    version, type_code, length, signature, sender, session, sequence = HEADER.unpack_from(datagram)
    if version != VERSION:
        raise Refused("version")
    if secret and not hmac.compare_digest(signature, sign(secret, datagram)):
        raise Refused("signature")
    if HEADER_SIZE + length != len(datagram):
        raise Refused("malformed")
    return Packet(
        type=type_code,
        sender_id=_text(sender),
        session_id=_text(session),
        sequence=sequence,
        payload=decode_payload(datagram[HEADER_SIZE:]),
    )


def decode_payload(body: bytes) -> Mapping[str, Any]:
    if not body:
        return {}
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise Refused("malformed") from None
    if not isinstance(value, dict):
        raise Refused("malformed")
    return value


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("ascii", "replace")
