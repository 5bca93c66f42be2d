"""Parked long-polls. One ConsumerGroup actor per (queue or namespace/task scope, group) in this
process holds the wake-up events of the pops waiting on it; a committed push into the queue, or a
lease released in it, sets them, so a parked pop re-tries at once instead of at its next backoff
tick. Actors exist only while someone waits and retire when idle.

The waiting loop itself (`pop_with_wait`) registers its event *before* each attempt, so a push
that commits while the attempt is in flight still wakes it: no wake-up can fall between "found
nothing" and "parked".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from queen.actors.registry import ActorRegistry, KeyedInbox
from queen.config import Config

QUEUE_MODE = "__QUEUE_MODE__"  # the consumer group of plain queue-mode pops and acks
Scope = tuple[str, str, str]  # ("queue", name, "") or ("task", namespace, task)
GroupKey = tuple[Scope, str]


@dataclass(frozen=True)
class Park:
    event: trio.Event


@dataclass(frozen=True)
class Unpark:
    event: trio.Event


@dataclass(frozen=True)
class Wake:
    pass


GroupMessage = Park | Unpark | Wake


async def _consumer_group(inbox: KeyedInbox[GroupKey, GroupMessage]) -> None:
    parked: set[trio.Event] = set()
    while True:
        message = await inbox.next() if not parked else await inbox.next(idle_s=3600)
        if message is None:
            for event in parked:
                event.set()
            return
        if isinstance(message, Park):
            parked.add(message.event)
        elif isinstance(message, Unpark):
            parked.discard(message.event)
        else:
            for event in parked:
                event.set()
            parked.clear()


class ConsumerGroups:
    """The registry of ConsumerGroup actors and the wake-up fan-out from pushes and acks."""

    def __init__(self, config: Config, nursery: trio.Nursery) -> None:
        self.config = config
        self.parked = 0
        self.registry: ActorRegistry[GroupKey, GroupMessage] = ActorRegistry(
            "consumer-group", nursery, _consumer_group, idle_after_s=30.0, inbox_size=1024
        )

    def wake_queue(self, queue: str, group: str | None = None) -> None:
        """A push committed into `queue` (any group may want it) or a lease was released."""
        for key in self.registry.keys():  # noqa: SIM118 (a copy: sends may retire actors)
            scope, key_group = key
            if group is not None and key_group != group:
                continue
            if scope[0] == "task" or scope[1] == queue:
                self.registry.try_send(key, Wake())

    def wake_all(self) -> None:
        for key in self.registry.keys():  # noqa: SIM118 (a copy: sends may retire actors)
            self.registry.try_send(key, Wake())

    def backoff_s(self, empty_attempts: int) -> float:
        """Re-check spacing after `empty_attempts` empty attempts (spec §3.6)."""
        config = self.config
        initial = float(config.pop_wait_initial_interval_ms)
        if empty_attempts <= config.pop_wait_backoff_threshold:
            delay = initial
        else:
            delay = initial * empty_attempts * config.pop_wait_backoff_multiplier
        return min(delay, config.pop_wait_max_interval_ms) / 1000

    async def pop_with_wait(
        self,
        key: GroupKey,
        attempt: Callable[[], Awaitable[dict[str, Any]]],
        timeout_s: float,
        stopping: trio.Event,
    ) -> dict[str, Any] | None:
        """Attempt until messages come, the deadline passes or the server stops (then None)."""
        deadline = trio.current_time() + timeout_s
        empty_attempts = 0
        while True:
            event = trio.Event()
            await self.registry.send(key, Park(event))
            try:
                result = await attempt()
                if result.get("messages"):
                    return result
                empty_attempts += 1
                remaining = deadline - trio.current_time()
                if remaining <= 0 or stopping.is_set():
                    return None
                self.parked += 1
                try:
                    with trio.move_on_after(min(remaining, self.backoff_s(empty_attempts))):
                        await event.wait()
                finally:
                    self.parked -= 1
                if stopping.is_set():
                    return None
            finally:
                if not event.is_set():
                    self.registry.try_send(key, Unpark(event))
