"""What `queen serve` with its workers costs in memory, for several commits in one run
(`python -m ops.bench.memory --ref 32bba4c --ref tree`): idle, after what a deployment does within
its first minute, and after the dashboard is opened.

Every commit gets a server of its own on one PostgreSQL (ops.bench.ab), all running at once, and
each step visits them in turn, so the figures of one step are taken under the same conditions.

- idle: after start-up work has settled (slots connected, warm-up calls).
- session: what a real deployment does within a minute, by the official client (queen-mq 0.15,
  the compat suite's virtualenv): a queue configured, messages pushed, popped and acked (alone and
  as a batch), plus `/health` probes and `/metrics/prometheus` scrapes.
- dashboard: the dashboard's page and the status and analytics routes it calls.

Requests go over new connections, several of each, so the kernel spreads them over every worker.
RSS counts shared libraries in every process; PSS splits them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

import httpx

from ops.bench import procs
from ops.bench.ab import Contender, _servers
from ops.bench.run import IDLE_SETTLE_S, _interrupt
from tests.compat.harness import CLIENT_015, ClientRunner, script, unique_queue

# New connections per kind of request: with two workers, all land on one with odds 1 in 2^(n-1).
CONNECTIONS = 8
DASHBOARD_PATHS = (
    "/",
    "/api/v1/status",
    "/api/v1/status/queues",
    "/api/v1/resources/overview",
    "/api/v1/analytics/system-metrics",
)


def _memory(contender: Contender) -> dict[str, Any]:
    assert contender.server.process is not None
    rows = [
        {"VmRSS": procs.memory_mb(pid).get("VmRSS"), "Pss": procs.pss_mb(pid)}
        for pid in procs.family(contender.server.process.pid)
    ]
    return {
        "serve": rows[0]["VmRSS"],
        "workers": [row["VmRSS"] for row in rows[1:]],
        "total": round(sum(row["VmRSS"] or 0.0 for row in rows), 1),
        "pss_total": round(sum(row["Pss"] or 0.0 for row in rows), 1),
    }


def _session(contender: Contender) -> None:
    client = ClientRunner(CLIENT_015, contender.server)
    for _ in range(CONNECTIONS // 2):
        queue = unique_queue("memory")
        options = {"leaseTime": 30, "retryLimit": 3}
        client.run(
            script("create_queue"),
            {"queue": queue, "namespace": "bench", "task": "memory", "options": options},
        )
        client.run(script("push_pop_ack"), {"queue": queue, "payloads": ["a", "b", "c"]})
    for path in ("/health", "/metrics/prometheus"):
        for _ in range(CONNECTIONS):
            httpx.get(contender.server.url + path, timeout=10.0).raise_for_status()


def _dashboard(contender: Contender) -> list[float]:
    """Each request's latency in ms: the first requests a worker leaves to quart also wait for
    it to be built, so theirs against the later ones' say what that costs."""
    latencies_ms = []
    for path in DASHBOARD_PATHS:
        for _ in range(CONNECTIONS):
            started = time.perf_counter()
            httpx.get(contender.server.url + path, timeout=10.0)
            latencies_ms.append(round((time.perf_counter() - started) * 1000, 1))
    return latencies_ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.memory", description=__doc__)
    parser.add_argument("--ref", action="append", required=True, help="commit, or `tree`")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    report: dict[str, dict[str, Any]] = {}
    with _servers(args.ref, args.workers) as contenders:
        time.sleep(IDLE_SETTLE_S)
        latencies: dict[str, list[float]] = {}
        for step in ("idle", "session", "dashboard"):
            for contender in contenders:
                if step == "session":
                    _session(contender)
                elif step == "dashboard":
                    latencies[contender.ref] = _dashboard(contender)
            time.sleep(1.0)  # answers sent, buffers settled
            for contender in contenders:
                figures = _memory(contender)
                report.setdefault(contender.ref, {})[step] = figures
                print(
                    f"[memory] {contender.ref} {step}: serve {figures['serve']}, workers "
                    f"{figures['workers']}, total {figures['total']} (PSS {figures['pss_total']})",
                    file=sys.stderr,
                )
        for ref, latencies_ms in latencies.items():
            later = sorted(latencies_ms[CONNECTIONS:])
            report[ref]["dashboard_latency_ms"] = {
                "first_path_max": max(latencies_ms[:CONNECTIONS]),
                "later_median": later[len(later) // 2],
            }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
