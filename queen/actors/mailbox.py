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
    """A one-shot answer slot. Answering twice is a bug in the actor, so it raises."""

    __slots__ = ("_receive", "_send")

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[outcome.Outcome[T]](1)

    def send(self, value: T) -> bool:
        """Answer; False when the asker already gave up (e.g. its client disconnected)."""
        return self._deliver(outcome.Value(value))

    def fail(self, error: BaseException) -> bool:
        return self._deliver(outcome.Error(error))

    def _deliver(self, result: outcome.Outcome[T]) -> bool:
        try:
            self._send.send_nowait(result)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        finally:
            self._send.close()
        return True

    @property
    def settled(self) -> bool:
        """Nothing more can pass: answered, abandoned, or the asker stopped waiting."""
        stats = self._send.statistics()
        return stats.open_send_channels == 0 or stats.open_receive_channels == 0

    def abandon(self) -> None:
        """Drop the reply without answering; the asker sees ActorGone."""
        self._send.close()

    async def wait(self) -> T:
        try:
            async with self._receive:
                result = await self._receive.receive()
        except trio.EndOfChannel:
            raise ActorGone("the actor stopped before answering") from None
        return result.unwrap()


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
