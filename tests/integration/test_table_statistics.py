"""A young `queen.messages` is analysed as it grows (queen/actors/table_statistics.py): plans
cached while a new database's table looked empty made every ack read a whole partition, and
autovacuum looks at most once a minute."""

from __future__ import annotations

import json

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


def test_an_acks_planner_settings_end_with_its_item_loop(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    """ack_items switches sequential scans, hash and merge joins off to plan its item lookup
    (sql/functions/06_ack.sql); the rest of the caller's transaction plans as before."""
    ack = [{"transactionId": "nobody", "partitionId": "00000000-0000-0000-0000-000000000000"}]
    row = run_sql(
        pg_cluster,
        "SELECT (SELECT queen.ack_items($1::jsonb)) -> 0 ->> 'error' AS error, "
        "current_setting('enable_seqscan') AS seqscan, "
        "current_setting('enable_hashjoin') AS hashjoin, "
        "current_setting('enable_mergejoin') AS mergejoin",
        json.dumps(ack),
        database=database,
    )[0]
    assert row["error"] == "Message not found"  # the item went through the loop
    assert (row["seqscan"], row["hashjoin"], row["mergejoin"]) == ("on", "on", "on")
