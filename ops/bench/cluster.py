"""Cluster benchmark: three queen instances on one PostgreSQL (fsync on), per sync transport.

    python -m ops.bench.cluster [--messages 20000] [--wake-tries 200] [--write-results]

For each transport (UDP peers with a secret; PostgreSQL LISTEN/NOTIFY with no peer list):
1. wake-up latency: a pop parked on B, a push on A, `--wake-tries` times (a queue each, so no
   debounce window is involved): p50/p99/max from the push request to the pop's answer;
2. exactly-once across instances: `--messages` pushed round-robin to A, B and C (batches of 100,
   one producer per instance) while consumers on all three pop and ack in queue mode and in two
   consumer groups; the time until every group had every message, and lost/duplicate counts.
Long-polls re-check only every 5 s on their own, so the wake-ups measured are the transport's.
stdout gets one JSON line; `--write-results` appends a section to ops/bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from ops.cluster import instance_env
from queen.storage.pgcluster import PgCluster, find_bindir, free_port
from tests.integration.api import Api, unique
from tests.integration.cluster_helpers import free_udp_port, one_wake, p99, shared_state
from tests.support import SLOW_RECHECK, ServerProcess, create_database, server_env, wait_until

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
SECRET = "bench-secret-bench-secret-bench-secret"
GROUPS: tuple[str | None, ...] = (None, "billing", "audit")
PUSH_BATCH = 100
POP_BATCH = 100


@contextlib.contextmanager
def instances(
    cluster: PgCluster, database: str, transport: str, workers: int, workdir: Path
) -> Iterator[list[ServerProcess]]:
    udp_ports = [free_udp_port("127.0.0.1") for _ in range(3)]
    processes = []
    for index in range(3):
        port = free_port()
        env = instance_env(index, port, udp_ports, SECRET, workdir) if transport == "udp" else {}
        env |= {**SLOW_RECHECK, "NUM_WORKERS": str(workers)}
        processes.append(ServerProcess(server_env(cluster, database, **env), port=port))
    try:
        for process in processes:
            process.start()
        for process in processes:
            wait_until(lambda p=process: ready(p, transport), 30, "sync running")
        yield processes
    finally:
        for process in processes:
            process.stop()


def ready(process: ServerProcess, transport: str) -> bool:
    state = shared_state(process)
    if transport == "udp":
        others = state.get("server_health", {}).get("servers_alive", 0)
    else:
        others = state.get("instances_heard", 0)
    return bool(state["running"]) and others == 2


async def wake_latency(a: ServerProcess, b: ServerProcess, tries: int) -> dict[str, Any]:
    latencies: list[float] = []
    push_rtts: list[float] = []
    delivered: Counter[str] = Counter()
    async with Api(a.url) as producer, Api(b.url) as consumer:
        for _ in range(tries):
            latency, push_rtt, ids = await one_wake(producer, consumer, any_worker=True)
            latencies.append(latency)
            push_rtts.append(push_rtt)
            delivered.update(ids)
    ordered = sorted(latencies)
    return {
        "tries": tries,
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
        "p99_ms": round(p99(latencies) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "push_rtt_p50_ms": round(sorted(push_rtts)[len(push_rtts) // 2] * 1000, 1),
        "push_rtt_p99_ms": round(p99(push_rtts) * 1000, 1),
        "delivered_twice": sum(1 for count in delivered.values() if count > 1),
    }


async def exactly_once(processes: list[ServerProcess], messages: int) -> dict[str, Any]:
    queue = unique("once")
    pushed: set[int] = set()
    seen: dict[str | None, Counter[int]] = {group: Counter() for group in GROUPS}
    finished_at: dict[str | None, float] = {}
    producers_done = trio.Event()
    apis = [Api(process.url, timeout_s=60) for process in processes]
    started = time.monotonic()

    async def produce(index: int) -> None:
        for start in range(index * PUSH_BATCH, messages, PUSH_BATCH * len(apis)):
            numbers = range(start, min(start + PUSH_BATCH, messages))
            await apis[index].push(queue, [{"n": n} for n in numbers])
            pushed.update(numbers)

    async def consume(api: Api, group: str | None) -> None:
        params: dict[str, Any] = {"batch": POP_BATCH, "wait": True, "timeout": 1000}
        if group is not None:
            params.update(consumerGroup=group, subscriptionMode="all")
        while not (producers_done.is_set() and len(seen[group]) >= messages):
            popped = await api.pop(queue, **params)
            if popped is None:
                continue
            seen[group].update(m["data"]["n"] for m in popped["messages"])
            await api.ack_batch(popped["messages"], group=group)
            if len(seen[group]) >= messages:
                finished_at.setdefault(group, time.monotonic())

    async with trio.open_nursery() as nursery:
        for group in GROUPS:
            for api in apis:
                nursery.start_soon(consume, api, group)
        async with trio.open_nursery() as producing:
            for index in range(len(apis)):
                producing.start_soon(produce, index)
        pushed_in = time.monotonic() - started
        producers_done.set()
    for api in apis:
        await api.__aexit__()
    elapsed = max(finished_at.values()) - started
    return {
        "messages": messages,
        "push_s": round(pushed_in, 2),
        "all_groups_done_s": round(elapsed, 2),
        "delivered_per_s": round(messages * len(GROUPS) / elapsed),
        "lost": {str(g): len(pushed - set(seen[g])) for g in GROUPS},
        "duplicates": {str(g): sum(c - 1 for c in seen[g].values() if c > 1) for g in GROUPS},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="queen-bench-cluster-"))
    os.chmod(root, 0o711)
    cluster = PgCluster(
        data_dir=root / "pg", bindir=find_bindir(None), settings={"max_connections": "400"}
    )
    cluster.start()
    out: dict[str, Any] = {
        "bench": "queen-cluster",
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "nproc": os.cpu_count(),
        "workers": args.workers,
    }
    try:
        for transport in args.transports.split(","):
            database = create_database(cluster, prefix=f"bench_{transport}")
            with instances(cluster, database, transport, args.workers, root) as processes:
                out[transport] = {
                    "wake": trio.run(wake_latency, processes[0], processes[1], args.wake_tries),
                    "exactly_once": trio.run(exactly_once, processes, args.messages),
                }
                print(f"{transport}: {out[transport]}", file=sys.stderr, flush=True)
    finally:
        cluster.stop()
    return out


def results_section(out: dict[str, Any]) -> str:
    lines = [
        f"\n## Cluster: three instances, one PostgreSQL ({out['commit']}, {out['started_at']})\n",
        f"`python -m ops.bench.cluster`, NUM_WORKERS={out['workers']} per instance, fsync on,"
        f" {out['nproc']} cores shared by everything.\n",
        "| transport | wake p50 / p99 / max (ms) | the push's own round trip p50 / p99 (ms) |"
        " delivered twice | messages | all groups done (s) | deliveries/s (3 groups) | lost |"
        " duplicates |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for transport in ("udp", "pg_notify"):
        if transport not in out:
            continue
        wake, once = out[transport]["wake"], out[transport]["exactly_once"]
        lines.append(
            f"| {transport} | {wake['p50_ms']} / {wake['p99_ms']} / {wake['max_ms']} |"
            f" {wake['push_rtt_p50_ms']} / {wake['push_rtt_p99_ms']} |"
            f" {wake['delivered_twice']} | {once['messages']} | {once['all_groups_done_s']} |"
            f" {once['delivered_per_s']} | {sum(once['lost'].values())} |"
            f" {sum(once['duplicates'].values())} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.cluster", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--wake-tries", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="NUM_WORKERS per instance")
    parser.add_argument("--transports", default="udp,pg_notify")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    out = run(args)
    print(json.dumps(out), flush=True)
    if args.write_results:
        with RESULTS_FILE.open("a") as results:
            results.write(results_section(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
