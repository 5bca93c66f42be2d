"""The push path: database first, disk when the database cannot take it.

A push goes to the disk buffer instead of PostgreSQL when push maintenance is on, when the
database is known to be down (a push failed for lack of it within the last second), or when its
own database call fails for an availability reason or is not answered within the in-flight
deadline (statement timeout + 5 s, waiting for a connection included). Other database errors are
real errors; validation already happened, so bad input never reaches the buffer. Each request is
answered only after its messages are committed or fsynced.

A push to a partition this worker's buffer still holds records for goes behind them
(`FileBuffer.behind_buffered`: it waits for the replay, bounded, or is buffered too), so a
producer's pushes are stored in the order they were answered across an outage. With nothing
buffered that costs one check per push.

A push given up on at the deadline may still commit later (its call was only presumed dead); the
buffered copy then replays as a duplicate of the same transactionId, never as a second message.

Payloads of encrypted queues are sealed first (queen/actors/encryption.py), so whichever way a
push goes, PostgreSQL or the disk buffer, it goes as envelopes; `store` is the same step for the
buffer's replay.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from queen.actors.encryption import Encryption
from queen.actors.file_buffer import FileBuffer, buffer_record
from queen.actors.system_flags import SystemFlags
from queen.config import Config
from queen.db.connect import call_deadline_s
from queen.db.errors import EncryptionRequired, is_availability_error
from queen.db.items import PushItem
from queen.errors import ServiceUnavailable

Items = list[PushItem]
SubmitPush = Callable[[Items], Awaitable[list[Any]]]
Results = list[dict[str, Any]]


class Destination(enum.Enum):
    """Where a push's items went; the HTTP layer words the answer."""

    DATABASE = "database"  # committed: `results` holds the procedure's per-item results
    BUFFER = "buffer"  # fsynced to the disk buffer, replayed later
    NOWHERE = "nowhere"  # neither PostgreSQL nor the disk buffer took them


@dataclass(frozen=True)
class PushOutcome:
    destination: Destination
    results: Results | None = None


class PushPath:
    def __init__(
        self,
        config: Config,
        submit: SubmitPush,
        file_buffer: FileBuffer,
        flags: SystemFlags,
        encryption: Encryption,
    ) -> None:
        self.deadline_s = call_deadline_s(config) or math.inf
        self.submit = submit
        self.file_buffer = file_buffer
        self.flags = flags
        self.encryption = encryption

    async def store(self, items: Items) -> list[Any]:
        """Seal and store in PostgreSQL, nothing else (the buffer's replay)."""
        return await self._submit(await self.encryption.seal(items))

    async def _submit(self, items: Items) -> list[Any]:
        try:
            return await self.submit(items)
        except EncryptionRequired:  # the flag changed under a cached view: look again, once
            return await self.submit(await self.encryption.seal(items, fresh=True))

    async def push(self, items: Items) -> PushOutcome:
        items = await self.encryption.seal(items)
        buffer = self.file_buffer
        if self.flags.maintenance:
            return await self._to_disk(items)
        if buffer.available and buffer.database_known_down():
            return await self._to_disk(items)
        if buffer.holding() and await buffer.behind_buffered(items):
            return await self._to_disk(items)
        try:
            with trio.fail_after(self.deadline_s):
                results = await self._submit(items)
        except Exception as error:
            if not (isinstance(error, trio.TooSlowError) or is_availability_error(error)):
                raise
            buffer.note_database(False)
            if not buffer.available:
                raise ServiceUnavailable(
                    "Database unavailable and no file buffer to fall back on"
                ) from error
            return await self._to_disk(items)
        buffer.note_database(True)
        return PushOutcome(Destination.DATABASE, results)

    async def _to_disk(self, items: Items) -> PushOutcome:
        try:
            await self.file_buffer.append([buffer_record(item) for item in items])
        except OSError:
            return PushOutcome(Destination.NOWHERE)
        return PushOutcome(Destination.BUFFER)
