"""A young `queen.messages` is analysed as it grows (queen/actors/table_statistics.py): plans
cached while a new database's table looked empty made every ack read a whole partition, and
autovacuum looks at most once a minute."""

from __future__ import annotations

import httpx
import pytest

from queen.storage.pgcluster import PgCluster
from tests.support import ServerProcess, run_sql, wait_until

LAST_ANALYZE = (
    "SELECT last_analyze FROM pg_stat_user_tables WHERE relid = 'queen.messages'::regclass"
)


@pytest.mark.timeout(90)
def test_a_messages_table_that_doubled_is_analysed_by_the_server(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    def refresh() -> bool:
        rows = run_sql(
            pg_cluster, "SELECT queen.refresh_young_statistics() AS done", database=database
        )
        return bool(rows[0]["done"])

    assert not refresh(), "an empty table with nothing changed is left alone"
    for chunk in range(3):
        items = [{"queue": "young-table", "payload": {"chunk": chunk, "n": n}} for n in range(500)]
        pushed = httpx.post(f"{server.url}/api/v1/push", json={"items": items}, timeout=30.0)
        assert pushed.status_code == 201, pushed.text

    def analysed() -> bool:
        return run_sql(pg_cluster, LAST_ANALYZE, database=database)[0]["last_analyze"] is not None

    # A manual ANALYZE (last_analyze; autovacuum's would be last_autoanalyze), made by a worker.
    wait_until(analysed, 60.0, "a worker to analyse queen.messages")
    assert not refresh(), "just analysed: nothing to do until the table doubles again"
