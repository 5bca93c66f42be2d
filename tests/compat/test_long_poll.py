"""Long-poll wake-up through the official clients' pop(wait=True).

This module's server re-checks parked pops only every 5 s on its own, so a pop answered well inside
that window after a push was woken by the push.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from queen.storage.pgcluster import PgCluster
from tests.compat.harness import ClientRunner, script
from tests.support import SLOW_RECHECK, ServerProcess, running_server

pytestmark = [pytest.mark.compat, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, **SLOW_RECHECK) as process:
        yield process


def test_push_wakes_a_waiting_pop(client: ClientRunner, queue_name: str) -> None:
    timeout_ms = 20000
    data = {"wake": "up"}
    result = client.run(
        script("long_poll_wake"), {"queue": queue_name, "timeout_ms": timeout_ms, "data": data}
    )
    assert result["parked_seen"] is True, f"the pop never showed as parked in /metrics: {result}"
    assert [m["data"] for m in result["messages"]] == [data], result
    assert result["answered_after_push_s"] < 2.0, (
        f"answered {result['answered_after_push_s']:.3f}s after the push: not woken by it "
        f"(re-check interval 5 s, pop timeout {timeout_ms / 1000:.0f} s)"
    )
    assert result["ack"]["success"] is True
