"""Which namespace and task each queue belongs to, as far as this worker knows: what lets a push
wake only the namespace/task long-polls it concerns instead of every one of them.

Entries come from two places: a queue configured through this worker is known at once, and a
queue the wake path asks about without knowing it is looked up in PostgreSQL, in batches, by
this actor, off the wake path. Until the answer is in, an unknown queue matches every
namespace/task waiter (what all queues did before), so a wake-up is never lost for want of an
entry. An entry is trusted for ENTRY_TTL_S, so a queue given another namespace or task through
another worker or instance is seen within that time; until then its pushes may miss that
scope's waiters, whose next backoff re-check finds the messages.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("queen.queue_scopes")

Lookup = Callable[[list[str]], Awaitable[dict[str, tuple[str, str]]]]

ENTRY_TTL_S = 10.0
MAX_ENTRIES = 100_000
MAX_WANTED = 1000
RETRY_AFTER_FAILURE_S = 1.0


class QueueScopes:
    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._known: dict[str, tuple[str, str, float]] = {}
        self._wanted: set[str] = set()
        self._asked = trio.Event()
        self.hits = 0
        self.misses = 0

    @property
    def size(self) -> int:
        return len(self._known)

    def forget(self, queue: str) -> None:
        """`queue` was changed elsewhere: look it up again at its next use."""
        self._known.pop(queue, None)

    def scope_of(self, queue: str) -> tuple[str, str] | None:
        """(namespace, task) of `queue`, or None while it is not known (a lookup is then asked
        for, and the caller must assume it may be any)."""
        entry = self._known.get(queue)
        if entry is not None and trio.current_time() < entry[2]:
            self.hits += 1
            return entry[0], entry[1]
        self.misses += 1
        if len(self._wanted) < MAX_WANTED:
            self._wanted.add(queue)
            self._asked.set()
        return None

    def learn(self, queue: str, namespace: str, task: str) -> None:
        """`queue` was just configured with this namespace and task."""
        self._known[queue] = (namespace, task, trio.current_time() + ENTRY_TTL_S)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._asked.wait()
            self._asked = trio.Event()
            wanted, self._wanted = sorted(self._wanted), set()
            try:
                found = await self._lookup(wanted)
            except Exception as error:
                # The queues stay unknown (matching every waiter) until a later wake asks again.
                log.debug("queue scope lookup failed", extra={"error": str(error)})
                await trio.sleep(RETRY_AFTER_FAILURE_S)
                continue
            self._remember(found)

    def _remember(self, found: dict[str, tuple[str, str]]) -> None:
        now = trio.current_time()
        if len(self._known) + len(found) > MAX_ENTRIES:
            self._known = {q: entry for q, entry in self._known.items() if entry[2] > now}
            if len(self._known) + len(found) > MAX_ENTRIES:
                self._known.clear()
        expires = now + ENTRY_TTL_S
        for queue, (namespace, task) in found.items():
            self._known[queue] = (namespace, task, expires)
