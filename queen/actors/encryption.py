"""Encryption at rest, applied where the write paths meet and undone on every read path
(spec §2, decisions D-E5…D-E9).

Writes: `seal` encrypts the payloads of items bound for queues with encryptionEnabled, once
(an item marked encrypted is never sealed again). The push path seals before it chooses between
PostgreSQL and the disk buffer, so the buffer only ever holds envelopes of encrypted queues;
buffer replay and transactions seal too. Whether a queue is encrypted comes from a view at most
FLAG_TTL_S old, re-read from PostgreSQL; the push procedure refuses a plaintext item for an
encrypted queue (QN412), and `EncryptionRequired` then makes the caller seal again with a fresh
view. A queue that asks for encryption while no key is loaded gets 503 (D-E9). While PostgreSQL
cannot be asked, the last view (or, for a queue never seen, "encrypted" whenever a key is loaded)
decides, so the push can still fail over to the disk buffer.

Reads: `open_pop_results` and `open_field` replace each envelope by the payload it holds; one no
key opens is left as stored, with a rate-limited warning (D-E8), so a consumer can still ack it.

Sealing 1000 small payloads takes about 1.2 ms on one core and opening them 1.8 ms (one AES-GCM
call each, timeit). It is done inline on the trio thread: measured through worker threads, four
concurrent sealers got no more done (the per-item Python work around each call holds the GIL)
and the loop's lag improved only in part (ops/bench/RESULTS.md).

Without any key there is no keyring, and cryptography (some 9 MB per worker) is never imported
(issue 20): the flags are still read, so a push to an encrypted queue is still refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from queen.config import Config, comma_list
from queen.db import queues
from queen.db.errors import is_availability_error
from queen.db.items import PushItem, Transaction, TransactionPush
from queen.db.runner import Runner
from queen.errors import ServiceUnavailable
from queen.security.envelope import is_envelope

if TYPE_CHECKING:
    from queen.security.keyring import Keyring

log = logging.getLogger("queen.encryption")

FLAG_TTL_S = 5.0
FLAG_LOOKUP_TIMEOUT_S = 2.0
MAX_CACHED_QUEUES = 100_000
WARNING_INTERVAL_S = 60.0


class Encryption:
    def __init__(self, config: Config, pool: Runner) -> None:
        self.keyring = _keyring(config)
        self.allow_plaintext = config.encryption_allow_plaintext
        self.pool = pool
        self._encrypted: dict[str, tuple[bool, float]] = {}
        self._last_warning = -WARNING_INTERVAL_S

    @property
    def can_encrypt(self) -> bool:
        return self.keyring is not None and self.keyring.can_encrypt

    @property
    def can_decrypt(self) -> bool:
        return self.keyring is not None and self.keyring.can_decrypt

    # Writes -------------------------------------------------------------------------------------
    async def seal(self, items: list[PushItem], *, fresh: bool = False) -> list[PushItem]:
        """`items` with the payloads of encrypted queues sealed; `fresh` re-reads every flag."""
        wanted = await self._encrypted_queues(
            {item.queue for item in items if not item.is_encrypted}, fresh
        )
        if not wanted:
            return items
        keyring = self.keyring
        if keyring is None or not keyring.can_encrypt:
            if self.allow_plaintext:
                return items
            queue = min(wanted)
            raise ServiceUnavailable(
                f"Queue '{queue}' requires encryption but no encryption key is configured"
            )
        positions = [
            index
            for index, item in enumerate(items)
            if item.queue in wanted and not item.is_encrypted
        ]
        envelopes = keyring.seal([bytes(items[index].payload) for index in positions])
        sealed = list(items)
        for index, envelope in zip(positions, envelopes, strict=True):
            sealed[index] = msgspec.structs.replace(
                items[index], payload=msgspec.Raw(envelope), is_encrypted=True
            )
        return sealed

    async def seal_transaction(self, ops: Transaction) -> Transaction:
        pushes = [op.item for op in ops if isinstance(op, TransactionPush)]
        if not pushes:
            return ops
        sealed_items = await self.seal(pushes)
        if sealed_items is pushes:  # nothing to encrypt: the operations as they came
            return ops
        sealed = iter(sealed_items)
        return [
            TransactionPush(next(sealed)) if isinstance(op, TransactionPush) else op for op in ops
        ]

    def forget(self, queue: str) -> None:
        """Another worker or instance changed the queue's settings: look its flag up again."""
        self._encrypted.pop(queue, None)

    async def _encrypted_queues(self, names: set[str], fresh: bool) -> set[str]:
        now = trio.current_time()
        stale = [
            name
            for name in names
            if fresh or now - self._encrypted.get(name, (False, -FLAG_TTL_S))[1] >= FLAG_TTL_S
        ]
        if stale:
            try:
                with trio.fail_after(FLAG_LOOKUP_TIMEOUT_S):
                    encrypted = await queues.encrypted_among(self.pool, stale)
            except Exception as error:
                if not (isinstance(error, trio.TooSlowError) or is_availability_error(error)):
                    raise
                return self._offline_guess(names)
            if len(self._encrypted) > MAX_CACHED_QUEUES:
                self._encrypted.clear()
            for name in stale:
                self._encrypted[name] = (name in encrypted, now)
        return {name for name in names if self._encrypted[name][0]}

    def _offline_guess(self, names: set[str]) -> set[str]:
        """PostgreSQL cannot say (the push is about to go to the disk buffer): the last view of
        a queue if there is one, else encrypted whenever a key is loaded, so that no plaintext
        of an encrypted queue reaches the disk; an envelope in a plain queue is still read
        back as its payload (D-E7)."""
        return {name for name in names if self._encrypted.get(name, (self.can_encrypt, 0.0))[0]}

    async def check_keys(self) -> None:
        """At start (D-E9): an encrypted queue without a key to write it is an operator error."""
        if self.can_encrypt:
            return
        try:
            count = await queues.encrypted_count(self.pool)
        except Exception as error:
            log.debug("could not count encrypted queues", extra={"error": str(error)})
            return
        if count and self.allow_plaintext:
            log.warning(
                "queues have encryptionEnabled but QUEEN_ENCRYPTION_KEY is not set: "
                "QUEEN_ENCRYPTION_ALLOW_PLAINTEXT stores their pushes in clear",
                extra={"queues": count},
            )
        elif count:
            log.error(
                "queues have encryptionEnabled but QUEEN_ENCRYPTION_KEY is not set: pushes to "
                "them are refused (503)",
                extra={"queues": count},
            )

    # Reads --------------------------------------------------------------------------------------
    def open_pop_results(self, results: list[Any]) -> list[Any]:
        for result in results:
            if isinstance(result, dict):
                self.open_all(result.get("messages") or (), "data")
        return results

    def open_all(self, holders: Iterable[Any], field: str) -> None:
        for holder in holders:
            if isinstance(holder, dict):
                self.open_field(holder, field, holder.get("isEncrypted") is True)

    def open_field(self, holder: dict[str, Any], field: str, flagged: bool = False) -> None:
        """Replace `holder[field]` by the payload its envelope holds (D-E7: when flagged, or
        when it has the envelope's exact shape)."""
        value = holder.get(field)
        keyring = self.keyring
        if keyring is None or not (flagged or is_envelope(value)):
            return
        if not isinstance(value, dict):
            return
        try:
            holder[field] = keyring.open(value)
        except ValueError as error:
            self._warn(holder, error)

    def _warn(self, holder: dict[str, Any], error: ValueError) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARNING_INTERVAL_S:
            self._last_warning = now
            message_id = holder.get("id") or holder.get("messageId") or holder.get("transactionId")
            log.warning(
                "an encrypted payload could not be decrypted; returned as stored",
                extra={"message_id": message_id, "reason": str(error)},
            )


def _keyring(config: Config) -> Keyring | None:
    """The configured keys; None without any, and then cryptography stays unloaded."""
    previous = comma_list(config.encryption_previous_keys)
    if not (config.encryption_key.strip() or previous):
        return None
    from queen.security.keyring import Keyring  # noqa: PLC0415 -- see the module doc

    return Keyring.from_hex(config.encryption_key, previous)
