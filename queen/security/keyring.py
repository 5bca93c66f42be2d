"""The AES-256-GCM keys of encryption at rest, sealing and opening the envelope of
queen/security/envelope.py (spec §2.3, D-E1…D-E4).

Its own module because cryptography costs a worker some 9 MB: queen/actors/encryption.py
imports it only when QUEEN_ENCRYPTION_KEY or QUEEN_ENCRYPTION_PREVIOUS_KEYS is set (issue 20).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from queen.security.envelope import IV_BYTES, NONCE_BYTES, TAG_BYTES, key_id


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
