"""Payload encryption at rest: AES-256-GCM in the envelope the original wrote (spec §2.3,
decisions D-E1…D-E4, D-E7).

Stored form: `{"encrypted", "iv", "authTag", "kid"}`, all standard base64 but `kid` (16 hex
characters naming the key). The iv is 16 random bytes of which the first 12 are the GCM nonce:
the original's OpenSSL calls used only those, and the original refuses any other iv length, so
it can still read what we write. No additional authenticated data, for the same reason.

Reading accepts the original's envelope (no `kid`; nonce = iv[:12]) and its Node.js
predecessor's (the whole 16-byte iv as nonce), with the current key and then the previous ones.

The format is here; the ciphers, which need cryptography (some 9 MB per worker), are in
queen/security/keyring.py, imported only where a key is configured (issue 20).
"""

from __future__ import annotations

import hashlib
from typing import Any

IV_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
ENVELOPE_MEMBERS = frozenset({"encrypted", "iv", "authTag"})


def key_id(key: bytes) -> str:
    """D-E3: the first 8 bytes of SHA-256 over a label and the key, as 16 hex characters."""
    return hashlib.sha256(b"queen-key-id" + key).digest()[:8].hex()


def is_envelope(value: Any) -> bool:
    """D-E7: an object whose members are exactly the envelope's (kid optional), all strings."""
    if not isinstance(value, dict):
        return False
    members = value.keys() - {"kid"}
    return members == ENVELOPE_MEMBERS and all(isinstance(v, str) for v in value.values())
