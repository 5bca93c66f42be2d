"""Actors that exist per key (a queue's consumer group, a partition, a peer): created on the first
message for their key and retired after an idle period, so a hundred thousand idle partitions cost
no tasks and no memory.

Retirement cannot lose a message: an actor retires only when its inbox is empty, and it removes
itself from the registry and closes its inbox without yielding to trio in between. A sender that
finds the inbox closed (the actor crashed) gets a fresh actor for the key.

An actor that crashes (or is cancelled) owes answers: to the requests still in its inbox and to the
ones it had taken but not answered. Both are abandoned, so their askers get ActorGone instead of
waiting forever.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import trio

from queen.actors.mailbox import ActorGone, Reply

log = logging.getLogger("queen.registry")

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")

ActorBody = Callable[["KeyedInbox[K, M]"], Awaitable[None]]


class KeyedInbox(Generic[K, M]):
    """What a keyed actor reads: its key, its messages, and the idle rule that retires it."""

    def __init__(
        self, registry: ActorRegistry[K, M], key: K, receive: trio.MemoryReceiveChannel[M]
    ) -> None:
        self.registry = registry
        self.key = key
        self._receive = receive
        self._owed: list[Reply[Any]] = []

    async def next(self) -> M | None:
        """The next message, or None once the actor has been idle long enough to retire.

        None means the actor is already out of the registry: finish what it holds, then return.
        """
        message = await self.receive(self.registry.idle_after_s)
        if message is None:
            self.registry._retire(self.key, self)
        return message

    async def receive(self, timeout_s: float) -> M | None:
        """The next message, or None when `timeout_s` passes first; the actor stays registered
        (for an actor that has timers of its own, e.g. waiters' deadlines)."""
        self._owed = [reply for reply in self._owed if not reply.settled]
        with trio.move_on_after(timeout_s):
            return self._taken(await self._receive.receive())
        return self.take_nowait()  # a message that arrived as the timer fired is still served

    def take_nowait(self) -> M | None:
        """A message already waiting in the inbox, or None."""
        try:
            return self._taken(self._receive.receive_nowait())
        except trio.WouldBlock:
            return None

    def _taken(self, message: M) -> M:
        reply = getattr(message, "reply", None)
        if isinstance(reply, Reply):
            self._owed.append(reply)
        return message

    def _abandon_owed(self) -> None:
        owed, self._owed = self._owed, []
        for reply in owed:
            reply.abandon()

    def pending(self) -> int:
        return self._receive.statistics().current_buffer_used


class ActorRegistry(Generic[K, M]):
    """Creates, finds and retires the actors of one kind; `send` is the only way to reach them."""

    def __init__(
        self,
        name: str,
        nursery: trio.Nursery | None,
        body: Callable[[KeyedInbox[K, M]], Awaitable[None]],
        *,
        idle_after_s: float = 60.0,
        inbox_size: int = 256,
    ) -> None:
        self.name = name
        self.idle_after_s = idle_after_s
        self._nursery = nursery
        self._body = body
        self._inbox_size = inbox_size
        self._actors: dict[K, tuple[trio.MemorySendChannel[M], KeyedInbox[K, M]]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the actors in a nursery of the registry's own, so a supervisor can own them: when
        it stops or restarts this, every actor stops and owes its askers ActorGone."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._actors.clear()

    def __len__(self) -> int:
        return len(self._actors)

    def __contains__(self, key: object) -> bool:
        return key in self._actors

    def keys(self) -> list[K]:
        return list(self._actors)

    async def send(self, key: K, message: M) -> None:
        for _ in range(3):
            inbox = self._actors.get(key)
            if inbox is None:
                inbox = self._spawn(key)
            try:
                await inbox[0].send(message)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if self._actors.get(key) is inbox:
                    del self._actors[key]
        raise ActorGone(f"{self.name}[{key!r}] cannot be reached")

    def try_send(self, key: K, message: M) -> bool:
        """Deliver without waiting, only to an actor that already exists (notifications)."""
        inbox = self._actors.get(key)
        if inbox is None:
            return False
        try:
            inbox[0].send_nowait(message)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def _spawn(self, key: K) -> tuple[trio.MemorySendChannel[M], KeyedInbox[K, M]]:
        if self._nursery is None:
            raise ActorGone(f"{self.name} is not running")
        send, receive = trio.open_memory_channel[M](self._inbox_size)
        keyed = KeyedInbox(self, key, receive)
        entry = (send, keyed)
        self._actors[key] = entry
        self._nursery.start_soon(self._run, key, entry, receive, name=f"{self.name}[{key!r}]")
        return entry

    async def _run(
        self,
        key: K,
        entry: tuple[trio.MemorySendChannel[M], KeyedInbox[K, M]],
        receive: trio.MemoryReceiveChannel[M],
    ) -> None:
        finished = False
        try:
            await self._body(entry[1])
            finished = True
        except Exception:
            log.exception(
                "keyed actor crashed; the next message for its key starts a new one",
                extra={"actor": self.name, "key": repr(key)},
            )
        finally:
            if self._actors.get(key) is entry:
                del self._actors[key]
            entry[0].close()
            if not finished:
                # Replies it handed on to another actor may still be answered there; after a
                # crash nothing says they will be, and an asker must never wait forever.
                entry[1]._abandon_owed()
            _abandon_replies(receive)
            receive.close()

    def _retire(self, key: K, keyed: KeyedInbox[K, M]) -> None:
        entry = self._actors.get(key)
        if entry is not None and entry[1] is keyed:
            del self._actors[key]
            entry[0].close()


def _abandon_replies(receive: trio.MemoryReceiveChannel[M]) -> None:
    """Messages left in a dead actor's inbox are answered with ActorGone rather than never."""
    while True:
        try:
            message = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        reply = getattr(message, "reply", None)
        if reply is not None:
            reply.abandon()
