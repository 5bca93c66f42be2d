"""Request/reply between actors: a message carries a one-shot `Reply`, the asker awaits it.

Inboxes are bounded memory channels, so a slow actor pushes back on its callers instead of letting
memory grow. An actor that goes away without answering turns into `ActorGone` for the asker, which
the HTTP layer maps to 503: a request is always answered, even during shutdown.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import outcome
import trio

T = TypeVar("T")
M = TypeVar("M")

DEFAULT_INBOX = 1024


class ActorGone(Exception):
    """The actor that owed an answer stopped (shutdown or crash) before giving it."""


class Reply(Generic[T]):
    """A one-shot answer slot. Only the first answer counts; a later one, or one after the asker
    stopped waiting, is refused (False). An event and a field rather than a memory channel: every
    request crosses two of these (measured in a trio loop of 20,000: making one 4.3 us with a
    channel pair, 0.2 us now; an answer handed across tasks and awaited 22 us, now 10 us)."""

    __slots__ = ("_closed", "_done", "_result")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._result: outcome.Outcome[T] | None = None
        self._closed = False  # answered, abandoned, or the asker stopped waiting

    def send(self, value: T) -> bool:
        """Answer; False when the asker already gave up (e.g. its client disconnected)."""
        return self._deliver(outcome.Value(value))

    def fail(self, error: BaseException) -> bool:
        return self._deliver(outcome.Error(error))

    def _deliver(self, result: outcome.Outcome[T]) -> bool:
        if self._closed:
            return False
        self._result, self._closed = result, True
        self._done.set()
        return True

    @property
    def settled(self) -> bool:
        """Nothing more can pass: answered, abandoned, or the asker stopped waiting."""
        return self._closed

    def abandon(self) -> None:
        """Drop the reply without answering (a no-op once answered); the asker sees ActorGone."""
        self._closed = True
        self._done.set()

    async def wait(self) -> T:
        try:
            await self._done.wait()
        finally:
            self._closed = True
        if self._result is None:
            raise ActorGone("the actor stopped before answering")
        return self._result.unwrap()


def open_inbox(
    size: int = DEFAULT_INBOX,
) -> tuple[trio.MemorySendChannel[M], trio.MemoryReceiveChannel[M]]:
    return trio.open_memory_channel[M](size)


async def deliver(inbox: trio.MemorySendChannel[M], message: M) -> None:
    """Send into an actor's inbox; a closed inbox means the actor is gone."""
    try:
        await inbox.send(message)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise ActorGone("the actor's inbox is closed") from None


async def deliver_soon(inbox: trio.MemorySendChannel[M], message: M) -> None:
    """`deliver`, without first yielding to the scheduler when the inbox has room: an asker that
    awaits its reply next yields there anyway, and the extra trip cost every request a scheduler
    pass. An asker already cancelled still delivers nothing."""
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        inbox.send_nowait(message)
    except trio.WouldBlock:
        await deliver(inbox, message)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise ActorGone("the actor's inbox is closed") from None
