"""Keeps the planner's statistics of `queen.messages` in step with a young, fast-growing table:
every few seconds it asks the database whether the table changed by more than its size since it
was last analysed, and the database analyses it when so (sql/functions/17_statistics.sql says
why: plans cached while a new database's table looked empty made every ack read a whole
partition). Every worker runs it; one at a time does the work."""

from __future__ import annotations

import logging

import trio

from queen.db import statistics
from queen.db.runner import Runner

log = logging.getLogger("queen.statistics")

CHECK_INTERVAL_S = 5.0


class TableStatistics:
    def __init__(self, db: Runner) -> None:
        self.db = db

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(CHECK_INTERVAL_S)
            try:
                analysed = await statistics.refresh_young_statistics(self.db)
            except Exception as error:  # the next check tries again
                log.warning("refreshing table statistics failed", extra={"error": str(error)})
            else:
                if analysed:
                    log.info("queen.messages analysed: it had changed by more than its size")
