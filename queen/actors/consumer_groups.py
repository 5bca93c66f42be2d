"""Parked long-polls. One ConsumerGroup actor per (scope, group) in this process owns the pops
waiting on it: a pop that found nothing is a `Park` message with a reply, and the actor, not each
HTTP task, decides when to look again. It looks once per wake-up or backoff tick for all of its
waiters together (one database call, whatever their number), answers those that got messages and
keeps the rest; at a waiter's deadline it answers None (the HTTP layer's 204).

No wake-up can fall between a waiter's empty first attempt and its parking: the waiter carries the
wake-up count it saw before that attempt, and an actor that receives a `Park` whose count is stale
looks again at once. A wake-up that arrives while the actor is polling makes it poll again after.

An actor that crashes abandons its waiters' replies; `ConsumerGroups.park` then parks them again
with a fresh actor, so a crash costs a waiter one extra look, never its place or an error.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from queen.actors.mailbox import ActorGone, Reply
from queen.actors.queue_scopes import QueueScopes
from queen.actors.registry import ActorRegistry, KeyedInbox
from queen.config import Config
from queen.db.items import PopRequest
from queen.errors import TryAgainLater

log = logging.getLogger("queen.consumer_groups")

QUEUE_MODE = "__QUEUE_MODE__"  # the consumer group of plain queue-mode pops and acks
# ("queue", name, "") for any partition of a queue, ("queue", name, partition) for one partition,
# ("task", namespace, task) for namespace/task pops across queues.
Scope = tuple[str, str, str]
GroupKey = tuple[Scope, str]
PopResult = dict[str, Any]
PopItems = Callable[[list[PopRequest]], Awaitable[list[PopResult]]]

IDLE_AFTER_S = 30.0
INBOX_SIZE = 1024
REPARK_DELAY_S = 0.05
INDEX_SLACK = 256


@dataclass(frozen=True)
class Park:
    """A pop that wants to wait: `attempt` builds its stored-procedure item (a fresh lease id per
    attempt); the reply is the first result with messages, or None at the deadline."""

    attempt: Callable[[], PopRequest]
    deadline: float
    seen_wakes: int
    reply: Reply[PopResult | None]


@dataclass(frozen=True)
class Wake:
    """Messages may have become available for this group (a push, a released lease, a seek…)."""


@dataclass(frozen=True)
class Drain:
    """The server is stopping: answer every waiter None now."""


GroupMessage = Park | Wake | Drain


class ConsumerGroups:
    """The registry of ConsumerGroup actors; `wake` is the only way in for wake-ups."""

    def __init__(
        self,
        config: Config,
        pop: PopItems,
        on_undelivered: Callable[[PopResult], None],
        queue_scopes: QueueScopes | None = None,
    ) -> None:
        """Without `queue_scopes`, a push to any queue wakes every namespace/task waiter."""
        self.config = config
        self.pop = pop
        self.on_undelivered = on_undelivered
        self.queue_scopes = queue_scopes
        self.parked = 0
        # Parked pops per queue of queue-scoped keys, sampled for metrics (queue_lag_metrics).
        self.parked_by_queue: Counter[str] = Counter()
        self.wakes = 0
        self.polls = 0
        self.stopping = False
        # Which actors a wake-up for a queue concerns, without a walk over all of them: keys
        # are added when a pop parks and dropped here once their actor has retired.
        self._by_queue: dict[str, set[GroupKey]] = {}
        self._task_keys: set[GroupKey] = set()
        self._indexed = 0  # keys in the index, counted loosely (re-counted at each sweep)
        self.registry: ActorRegistry[GroupKey, GroupMessage] = ActorRegistry(
            "consumer-group",
            None,
            _ConsumerGroup(self).run,
            idle_after_s=IDLE_AFTER_S,
            inbox_size=INBOX_SIZE,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.registry.run(task_status=task_status)

    def wake(self, queue: str | None, group: str | None = None) -> None:
        """Messages may be available in `queue` (None: in any queue) for `group` (None: for any
        group): wake the waiters of that queue, and the namespace/task waiters whose scope
        covers it (all of them while the queue's scope is not known here)."""
        self.wakes += 1
        queue_scope: tuple[str, str] | None = None
        asked = self.queue_scopes is None
        for key in self._candidates(queue):
            if key not in self.registry:
                self._forget(key)
                continue
            scope, key_group = key
            if group is not None and key_group != group:
                continue
            if queue is not None and scope[0] == "task":
                if not asked and self.queue_scopes is not None:
                    queue_scope, asked = self.queue_scopes.scope_of(queue), True
                if queue_scope is not None and not in_scope(scope, queue_scope):
                    continue
            elif queue is not None and scope[1] != queue:
                continue
            self.registry.try_send(key, Wake())

    def _candidates(self, queue: str | None) -> list[GroupKey]:
        if queue is None:
            return self.registry.keys()
        return [*self._by_queue.get(queue, ()), *self._task_keys]

    def _index(self, key: GroupKey) -> None:
        scope = key[0]
        if scope[0] == "task":
            self._task_keys.add(key)
        else:
            self._by_queue.setdefault(scope[1], set()).add(key)
        self._indexed += 1
        if self._indexed > 2 * len(self.registry) + INDEX_SLACK:
            # Keys of queues never woken again are dropped here, so the index stays about the
            # size of the registry however many queues come and go.
            for stale in [k for ks in self._by_queue.values() for k in ks] + [*self._task_keys]:
                if stale not in self.registry and stale != key:
                    self._forget(stale)
            self._indexed = len(self._task_keys) + sum(map(len, self._by_queue.values()))

    def _forget(self, key: GroupKey) -> None:
        scope = key[0]
        if scope[0] == "task":
            self._task_keys.discard(key)
            return
        keys = self._by_queue.get(scope[1])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_queue[scope[1]]

    def drain(self) -> None:
        """Shutdown: every waiter is answered None and new ones are not parked."""
        self.stopping = True
        for key in self.registry.keys():  # noqa: SIM118 (a copy: sends may retire actors)
            self.registry.try_send(key, Drain())

    def backoff_s(self, empty_polls: int) -> float:
        """Re-check spacing after `empty_polls` empty looks (spec §3.6)."""
        config = self.config
        initial = float(config.pop_wait_initial_interval_ms)
        if empty_polls <= config.pop_wait_backoff_threshold:
            delay = initial
        else:
            delay = initial * empty_polls * config.pop_wait_backoff_multiplier
        return min(delay, config.pop_wait_max_interval_ms) / 1000

    async def park(
        self,
        key: GroupKey,
        attempt: Callable[[], PopRequest],
        deadline: float,
        seen_wakes: int,
    ) -> PopResult | None:
        """Wait in the group's actor until messages come (the result) or `deadline` (trio time;
        then None). `seen_wakes` is `wakes` as read before the caller's own empty attempt.
        Beyond QUEEN_MAX_PARKED_POPS waiting in this worker, TryAgainLater (503, Retry-After)."""
        if self.parked >= self.config.max_parked_pops:
            raise TryAgainLater("Server busy: too many waiting pops, retry later")
        self._index(key)
        queue = key[0][1] if key[0][0] == "queue" else None
        while not self.stopping and trio.current_time() < deadline:
            reply: Reply[PopResult | None] = Reply()
            self.parked += 1
            if queue is not None:
                self.parked_by_queue[queue] += 1
            try:
                await self.registry.send(key, Park(attempt, deadline, seen_wakes, reply))
                return await reply.wait()
            except ActorGone:
                seen_wakes = -1  # the new actor must look at once: a wake-up may have been lost
            finally:
                self.parked -= 1
                if queue is not None:
                    self.parked_by_queue[queue] -= 1
                    if not self.parked_by_queue[queue]:
                        del self.parked_by_queue[queue]
            # The registry may be restarting (its supervisor's backoff): try again shortly
            # rather than spin.
            await trio.sleep(REPARK_DELAY_S)
        return None


def in_scope(scope: Scope, queue_scope: tuple[str, str]) -> bool:
    """Whether a namespace/task pop's `scope` covers a queue of this (namespace, task): an
    empty namespace or task in the scope means any, as in the pop procedure."""
    _, namespace, task = scope
    return (not namespace or namespace == queue_scope[0]) and (not task or task == queue_scope[1])


@dataclass
class _Waiter:
    park: Park

    @property
    def gone(self) -> bool:
        return self.park.reply.settled


class _ConsumerGroup:
    """The actor body, one task per key, sharing nothing but its owner's settings."""

    def __init__(self, owner: ConsumerGroups) -> None:
        self.owner = owner

    async def run(self, inbox: KeyedInbox[GroupKey, GroupMessage]) -> None:
        """Crashing or cancelled, the registry abandons the waiters' replies (they park again)."""
        waiters: list[_Waiter] = []
        empty_polls = 0
        next_poll = math.inf
        while True:
            if not waiters:
                message = await inbox.next()
                if message is None:
                    return
            else:
                timer = min(next_poll, *(w.park.deadline for w in waiters))
                message = await inbox.receive(max(0.0, timer - trio.current_time()))
            poll_now = False
            while message is not None:
                if isinstance(message, Park):
                    waiters.append(_Waiter(message))
                    if message.seen_wakes != self.owner.wakes:
                        poll_now = True
                    elif next_poll == math.inf:
                        empty_polls = 0
                        next_poll = trio.current_time() + self.owner.backoff_s(1)
                elif isinstance(message, Wake):
                    poll_now = True
                    empty_polls = 0
                else:
                    self._answer_all(waiters)
                message = inbox.take_nowait()
            if self.owner.stopping:
                self._answer_all(waiters)
            now = trio.current_time()
            waiters = self._expire(waiters, now)
            if not waiters:
                next_poll = math.inf
                continue
            if poll_now or now >= next_poll:
                found = await self._poll(waiters, head_only=not poll_now)
                waiters = [w for w in waiters if not w.gone]
                empty_polls = 0 if found else empty_polls + 1
                next_poll = trio.current_time() + self.owner.backoff_s(max(1, empty_polls))

    async def _poll(self, waiters: list[_Waiter], *, head_only: bool) -> bool:
        """One look for the waiters; on a backoff tick only the oldest looks first (most ticks
        find nothing, and one probe costs less than N), and the rest follow if it found some."""
        live = [w for w in waiters if not w.gone]
        if not live:
            return False
        batch = live[:1] if head_only else live
        found = await self._look(batch)
        if found and head_only and len(live) > 1:
            await self._look(live[1:])
        return found

    async def _look(self, batch: list[_Waiter]) -> bool:
        self.owner.polls += 1
        try:
            results = await self.owner.pop([w.park.attempt() for w in batch])
        except Exception as error:
            # Quirk Q20: a pop never answers 5xx; a failed look is an empty one.
            log.debug("long-poll look failed", extra={"error": str(error)})
            return False
        found = False
        for waiter, result in zip(batch, results, strict=True):
            if not result.get("messages"):
                continue
            found = True
            if not waiter.park.reply.send(result):
                self.owner.on_undelivered(result)
        return found

    @staticmethod
    def _expire(waiters: list[_Waiter], now: float) -> list[_Waiter]:
        kept: list[_Waiter] = []
        for waiter in waiters:
            if waiter.gone:
                continue
            if now >= waiter.park.deadline:
                waiter.park.reply.send(None)
            else:
                kept.append(waiter)
        return kept

    @staticmethod
    def _answer_all(waiters: list[_Waiter]) -> None:
        for waiter in waiters:
            if not waiter.gone:
                waiter.park.reply.send(None)
        waiters.clear()
