"""Payload encryption at rest: AES-256-GCM in the envelope the original wrote (spec §2.3,
decisions D-E1…D-E4, D-E7).

Stored form: `{"encrypted", "iv", "authTag", "kid"}`, all standard base64 but `kid` (16 hex
characters naming the key). The iv is 16 random bytes of which the first 12 are the GCM nonce:
the original's OpenSSL calls used only those, and the original refuses any other iv length, so
it can still read what we write. No additional authenticated data, for the same reason.

Reading accepts the original's envelope (no `kid`; nonce = iv[:12]) and its Node.js
predecessor's (the whole 16-byte iv as nonce), with the current key and then the previous ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

IV_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
ENVELOPE_MEMBERS = frozenset({"encrypted", "iv", "authTag"})


def key_id(key: bytes) -> str:
    """D-E3: the first 8 bytes of SHA-256 over a label and the key, as 16 hex characters."""
    return hashlib.sha256(b"queen-key-id" + key).digest()[:8].hex()


class Keyring:
    """The current key (encrypts and decrypts) and the previous ones (decrypt only)."""

    def __init__(self, current: bytes | None, previous: Sequence[bytes] = ()) -> None:
        self.current = (key_id(current), AESGCM(current)) if current else None
        self.all = [(key_id(key), AESGCM(key)) for key in (current, *previous) if key]
        self.by_id = dict(self.all)

    @classmethod
    def from_hex(cls, current: str, previous: Sequence[str]) -> Keyring:
        return cls(
            bytes.fromhex(current.strip()) if current.strip() else None,
            [bytes.fromhex(key.strip()) for key in previous],
        )

    @property
    def can_encrypt(self) -> bool:
        return self.current is not None

    @property
    def can_decrypt(self) -> bool:
        return bool(self.all)

    def seal(self, plaintexts: Sequence[bytes]) -> list[bytes]:
        """Each plaintext's envelope as JSON text; one call to the random source for all."""
        assert self.current is not None, "seal needs a current key"
        kid, cipher = self.current
        randomness = os.urandom(IV_BYTES * len(plaintexts))
        sealed = []
        encode = base64.b64encode
        for index, plaintext in enumerate(plaintexts):
            iv = randomness[index * IV_BYTES : (index + 1) * IV_BYTES]
            out = cipher.encrypt(iv[:NONCE_BYTES], plaintext, None)
            sealed.append(
                b'{"encrypted":"%s","iv":"%s","authTag":"%s","kid":"%s"}'
                % (encode(out[:-TAG_BYTES]), encode(iv), encode(out[-TAG_BYTES:]), kid.encode())
            )
        return sealed

    def open(self, envelope: dict[str, Any]) -> Any:
        """The payload an envelope holds, parsed; raises ValueError when no key opens it."""
        try:
            ciphertext = base64.b64decode(envelope["encrypted"], validate=True)
            iv = base64.b64decode(envelope["iv"], validate=True)
            tag = base64.b64decode(envelope["authTag"], validate=True)
        except (binascii.Error, TypeError, KeyError):
            raise ValueError("malformed envelope") from None
        if len(tag) != TAG_BYTES or len(iv) < NONCE_BYTES:
            raise ValueError("malformed envelope")
        kid = envelope.get("kid")
        named = self.by_id.get(kid) if isinstance(kid, str) else None
        ciphers = [named] if named is not None else [cipher for _, cipher in self.all]
        nonces = [iv[:NONCE_BYTES], iv] if len(iv) == IV_BYTES else [iv]
        for cipher in ciphers:
            for nonce in nonces:
                try:
                    return orjson.loads(cipher.decrypt(nonce, ciphertext + tag, None))
                except InvalidTag:
                    continue
        raise ValueError("no key opens this envelope")


def is_envelope(value: Any) -> bool:
    """D-E7: an object whose members are exactly the envelope's (kid optional), all strings."""
    if not isinstance(value, dict):
        return False
    members = value.keys() - {"kid"}
    return members == ENVELOPE_MEMBERS and all(isinstance(v, str) for v in value.values())
