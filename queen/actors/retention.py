"""Retention and eviction (operations spec §5.5, §5.6): the cluster-wide clean-up loops.

Every worker of every instance runs both loops, first cycle at once, then one per interval. The
procedures in sql/functions/13_retention.sql take the advisory lock 737001 and stamp the cycle's
start, so a cycle's work is done once in the cluster, about once per interval, however many
workers ask.

A cycle gets a connection of its own, opened for the cycle and closed after it, instead of a slot
of the admin pool: the lock is a session lock that must stay on the connection doing the work
(quirk O30), and a pooled connection would carry it into whatever call it serves next. Closing
the connection also releases the lock when a cycle fails or is cancelled halfway, and the cycle
commits batch by batch, so whatever it finished stays done.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_asyncio

from queen.config import Config
from queen.db import retention
from queen.db.connect import ConnectionRunner, ConnectParams, on_own_connection

RETENTION = "retention"
EVICTION = "eviction"

# Each step of a cycle (the last: idle groups and old log rows together) stops after this long
# and leaves the rest to the next cycle, so one huge backlog cannot hold the shared lock (and so
# eviction) for minutes (spec §5.5, §5.6).
RETENTION_STEP_BUDGET_MS = 60_000
EVICTION_BUDGET_MS = 30_000
# A worker whose timer fires slightly early must not skip a cycle another worker ran a full
# interval ago: "due" means 90 % of the interval has passed.
DUE_FRACTION = 0.9
# The statement timeout of the cycle connection: the budgets plus room for the last batch.
STATEMENT_MARGIN_MS = 60_000

_logs = {
    RETENTION: logging.getLogger("queen.retention"),
    EVICTION: logging.getLogger("queen.eviction"),
}


class RetentionServices:
    """The retention and eviction loops of one worker process."""

    def __init__(
        self,
        config: Config,
        params: ConnectParams,
        *,
        worker_id: int = 0,
        step_budget_ms: int = RETENTION_STEP_BUDGET_MS,
        eviction_budget_ms: int = EVICTION_BUDGET_MS,
    ) -> None:
        self.config = config
        self.step_budget_ms = step_budget_ms
        self.eviction_budget_ms = eviction_budget_ms
        # Three time-boxed steps in a retention cycle (age, completed, groups and logs).
        timeout_ms = 3 * step_budget_ms + eviction_budget_ms + STATEMENT_MARGIN_MS
        self.params = dataclasses.replace(
            params,
            server_settings={
                **params.server_settings,
                "application_name": f"queen-w{worker_id}-retention",
                "statement_timeout": str(timeout_ms),
            },
        )
        self.last_outcome: dict[str, dict[str, Any]] = {}
        # Retention and eviction share the cluster lock; in one process they take turns here
        # rather than have the second find the lock taken and skip its cycle.
        self._turn = trio.Lock()
        self._failing: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._loop, RETENTION, self.config.retention_interval)
            nursery.start_soon(self._loop, EVICTION, self.config.eviction_interval)

    async def retention_cycle(self, *, min_interval_ms: int = 0) -> dict[str, Any]:
        """One retention cycle; with min_interval_ms 0 it runs even if another just did."""
        return await self._on_own_connection(
            functools.partial(
                retention.retention_round,
                batch_size=self.config.retention_batch_size,
                partition_cleanup_days=self.config.partition_cleanup_days,
                step_budget_ms=self.step_budget_ms,
                min_interval_ms=min_interval_ms,
                metrics_retention_days=self.config.metrics_retention_days,
                group_cleanup_days=self.config.group_cleanup_days,
            )
        )

    async def eviction_cycle(self, *, min_interval_ms: int = 0) -> dict[str, Any]:
        """One eviction cycle; with min_interval_ms 0 it runs even if another just did."""
        return await self._on_own_connection(
            functools.partial(
                retention.eviction_round,
                batch_size=self.config.eviction_batch_size,
                budget_ms=self.eviction_budget_ms,
                min_interval_ms=min_interval_ms,
            )
        )

    async def _loop(self, service: str, interval_ms: int) -> None:
        cycle = self.retention_cycle if service == RETENTION else self.eviction_cycle
        while True:
            started = trio.current_time()
            try:
                outcome = await cycle(min_interval_ms=int(interval_ms * DUE_FRACTION))
            except Exception as error:
                self._failed(service, error)
            else:
                self._failing.discard(service)
                self.last_outcome[service] = outcome
                _report(service, outcome)
            await trio.sleep_until(started + interval_ms / 1000)

    def _failed(self, service: str, error: Exception) -> None:
        """Warn once per streak: a database that is down for an hour should not fill the log."""
        log = _logs[service]
        level = logging.DEBUG if service in self._failing else logging.WARNING
        self._failing.add(service)
        log.log(
            level, f"{service} cycle failed; retrying next interval", extra={"error": str(error)}
        )

    async def _on_own_connection(
        self, cycle: Callable[[ConnectionRunner], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        async with self._turn:
            result = await trio_asyncio.aio_as_trio(on_own_connection)(self.params, cycle)
        assert isinstance(result, dict)
        return result


def _report(service: str, outcome: dict[str, Any]) -> None:
    """Spec §10: periodic services log at debug unless they did something."""
    log = _logs[service]
    if not outcome.get("ran"):
        log.debug(f"{service} cycle skipped", extra={"reason": outcome.get("reason")})
        return
    counts = {k: v for k, v in outcome.items() if k != "ran"}
    deleted = sum(
        int(outcome.get(key) or 0)
        for key in (
            "retention",
            "completedRetention",
            "partitionsDropped",
            "groupsDropped",
            "consumedLogDeleted",
            "historyDeleted",
            "evicted",
        )
    )
    if outcome.get("errors"):
        log.warning(f"{service} cycle skipped partitions it could not clean", extra=counts)
    elif outcome.get("timedOut"):
        log.info(f"{service} cycle stopped at its time budget; it resumes next cycle", extra=counts)
    elif deleted:
        log.info(f"{service} cycle deleted data", extra=counts)
    else:
        log.debug(f"{service} cycle found nothing to delete", extra=counts)
