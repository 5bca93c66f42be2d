"""Keeps the metric tables bounded (operations spec §5.5 step 4, quirk O26): every
RETENTION_INTERVAL it deletes worker, queue and system metric rows older than
METRICS_RETENTION_DAYS, in batches, until none is left or the cycle's time is up. Every worker
runs it; a transaction-level lock in the procedure lets one at a time do the work."""

from __future__ import annotations

import logging

import trio

from queen.config import Config
from queen.db import metrics
from queen.db.runner import Runner

log = logging.getLogger("queen.metrics")

BATCH_ROWS = 5000
CYCLE_BUDGET_S = 30.0


class MetricsJanitor:
    def __init__(self, config: Config, db: Runner) -> None:
        self.config = config
        self.db = db

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                deleted = await self.cycle()
            except Exception as error:  # the next cycle tries again
                log.warning("metrics pruning failed", extra={"error": str(error)})
            else:
                if deleted:
                    log.info("old metric rows deleted", extra={"rows": deleted})
            await trio.sleep(self.config.retention_interval / 1000)

    async def cycle(self) -> int:
        deleted = 0
        with trio.move_on_after(CYCLE_BUDGET_S):
            while True:
                batch = await metrics.prune(self.db, self.config.metrics_retention_days, BATCH_ROWS)
                if not batch:  # None: another instance is pruning; 0: nothing left
                    break
                deleted += batch
        return deleted
