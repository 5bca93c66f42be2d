"""How the functions of queen/db reach PostgreSQL without knowing who holds the connection.

A `Runner` runs one statement: a connection-slot pool (`SlotPool.call`, queen/actors/slots.py) or a
bare connection (`ConnectionRunner`, queen/db/connect.py). `Pools` is what the request paths hold:
the `admin` pool for reads and slow administrative calls, the `hot` pool for calls on the message
path, so a slow listing never holds a connection a push or pop is waiting for. Each procedure
function picks one of the two itself.

A `Submitter` (a slot pool) also starts a call without waiting for it: its outcome goes to an
`Answer`, on whichever task the result arrives (the batcher's lanes deliver there, so a call costs
them no task of their own).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

CallKind = Literal["fetch", "fetchrow", "fetchval", "execute"]


class Runner(Protocol):
    async def call(
        self, sql: str, *args: Any, kind: CallKind = "fetch", timeout_s: float | None = None
    ) -> Any: ...


class Answer(Protocol):
    """Where a call's outcome goes (queen/actors/mailbox.py's `Reply` is one): a result, an error,
    or nothing (the runner stopped first). Called once; later calls are refused (False)."""

    def send(self, value: Any) -> bool: ...

    def fail(self, error: BaseException) -> bool: ...

    def abandon(self) -> None: ...


class Submitter(Runner, Protocol):
    async def submit(
        self,
        answer: Answer,
        sql: str,
        *args: Any,
        kind: CallKind = "fetch",
        timeout_s: float | None = None,
    ) -> None:
        """Start the call (waiting only for room in a full queue); `answer` gets its outcome."""


class Pools(Protocol):
    @property
    def admin(self) -> Runner: ...

    @property
    def hot(self) -> Runner: ...


async def procedure_value(db: Runner, sql: str, *args: Any) -> Any:
    """The single value a procedure call answers (most answer one JSONB document)."""
    return await db.call(sql, *args, kind="fetchval")
