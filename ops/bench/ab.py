"""Side-by-side CPU cost of small requests for several commits, in one run
(`python -m ops.bench.ab --ref 2bcc0f8 --ref tree`).

On a machine shared with other work, two benchmark runs minutes apart measure two different
machines. Here every commit gets a server of its own on one PostgreSQL, all running at once, and
the load visits them in short alternating bursts, so whatever else the machine does falls on all
of them alike. Each burst measures the workers' CPU seconds (from /proc) per HTTP request
answered; the medians over the rounds, and their ratio to the first commit, are the result, with
each round paired against the first commit's (`paired`): the median of those ratios, the rounds
that came out lower, and a sign test.

Bursts: `push1` (single-message pushes, 32 connections) and `pop1` (pop `--pop-batch` messages,
one by default, and ack them with one ack batch, 8 consumers, from a queue pre-filled for the
whole run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.bench import procs
from ops.bench.phases import PhaseSpec, Window, timed_phase
from ops.bench.run import _export, _interrupt, _working_directory
from queen.storage.pgcluster import PgCluster, find_bindir
from tests.support import ServerProcess, create_database, server_env

WARMUP_S = 0.5
# What one burst of pops can take on two cores, with room to spare.
PREFILL_PER_BURST = 4000
PREFILL_MAX_PER_BURST = 40_000


@dataclass
class Contender:
    ref: str
    server: ServerProcess
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def worker_cpu(self) -> procs.CpuSnapshot:
        assert self.server.process is not None
        return procs.CpuSnapshot.of(procs.children(self.server.process.pid))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.ab", description=__doc__)
    parser.add_argument("--ref", action="append", required=True, help="commit, or `tree`")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--burst", type=float, default=3.0, help="seconds per burst")
    parser.add_argument("--bursts", default="push1,pop1", help="push1,pop1 or a subset")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pop-batch", type=int, default=1, help="messages per pop in pop1")
    return parser


def _burst(contender: Contender, kind: str, seconds: float, pop_batch: int) -> tuple[float, float]:
    """(worker CPU us per HTTP request, requests per second) of one burst."""
    url = contender.server.url
    if kind == "push1":
        spec = PhaseSpec(
            kind="push", url=url, queue="ab-push", partitions=16, batch=1, connections=32
        )
    else:
        spec = PhaseSpec(
            kind="pop_ack", url=url, queue="ab-pop", partitions=16, batch=pop_batch, connections=8
        )
    start = time.monotonic() + WARMUP_S
    window = Window(start, start + seconds)

    async def measured() -> tuple[dict[str, Any], float]:
        async def sample() -> float:
            await asyncio.sleep(max(0.0, window.start_at - time.monotonic()))
            before = contender.worker_cpu()
            await asyncio.sleep(max(0.0, window.end_at - time.monotonic()))
            return contender.worker_cpu().since(before)

        sampler = asyncio.create_task(sample())
        result = await timed_phase(spec, window)
        return result, await sampler

    result, cpu_s = asyncio.run(measured())
    answered = result["http_requests_in_window"]
    return (cpu_s / answered * 1e6 if answered else float("nan"), answered / seconds)


def _prefill(contender: Contender, messages: int) -> None:
    spec = PhaseSpec(
        kind="push",
        url=contender.server.url,
        queue="ab-pop",
        partitions=16,
        batch=1000,
        connections=4,
        total_requests=messages // 1000,
    )
    now = time.monotonic()
    asyncio.run(timed_phase(spec, Window(now, now + 600)))


@contextlib.contextmanager
def _servers(refs: list[str], workers: int) -> Iterator[list[Contender]]:
    root = Path(tempfile.mkdtemp(prefix="queen-ab-"))
    os.chmod(root, 0o711)
    cluster = PgCluster(
        data_dir=root / "pg",
        bindir=find_bindir(os.environ.get("QUEEN_PG_BINDIR")),
        settings={"max_connections": "400"},
    )
    contenders: list[Contender] = []
    try:
        cluster.start()
        for index, ref in enumerate(refs):
            tree = None if ref == "tree" else _export(ref, root / f"src{index}")
            database = create_database(cluster, "queen_ab")
            env = server_env(cluster, database, NUM_WORKERS=str(workers))
            server = ServerProcess(env={**env, "LOG_LEVEL": "warn"})
            with _working_directory(tree):
                server.start(timeout_s=90.0)
            contenders.append(Contender(ref, server))
        yield contenders
    finally:
        for contender in contenders:
            with contextlib.suppress(Exception):
                contender.server.stop()
        with contextlib.suppress(Exception):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A plain `kill` tears down like Ctrl-C: the servers and PostgreSQL would outlive us.
    signal.signal(signal.SIGTERM, _interrupt)
    kinds = [k for k in args.bursts.split(",") if k]
    with _servers(args.ref, args.workers) as contenders:
        if "pop1" in kinds:
            for contender in contenders:
                per_burst = min(PREFILL_PER_BURST * args.pop_batch, PREFILL_MAX_PER_BURST)
                _prefill(contender, per_burst * args.rounds)
        for round_index in range(args.rounds):
            # Rotated each round, so no commit always follows the same one.
            shift = round_index % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                for kind in kinds:
                    cpu_us, per_s = _burst(contender, kind, args.burst, args.pop_batch)
                    contender.samples.setdefault(kind, []).append((cpu_us, per_s))
                    print(
                        f"[ab] round {round_index + 1} {contender.ref} {kind}: "
                        f"{cpu_us:.0f} us/request, {per_s:.0f} requests/s",
                        file=sys.stderr,
                    )
        first = contenders[0]
        report: dict[str, Any] = {"rounds": args.rounds, "burst_s": args.burst, "results": {}}
        for contender in contenders:
            for kind, samples in contender.samples.items():
                cpu = statistics.median(s[0] for s in samples)
                base = statistics.median(s[0] for s in first.samples[kind])
                report["results"].setdefault(kind, {})[contender.ref] = {
                    "worker_cpu_us_per_request": round(cpu),
                    "requests_per_s": round(statistics.median(s[1] for s in samples)),
                    "cpu_vs_first": round(cpu / base, 3),
                    **paired([s[0] for s in samples], [s[0] for s in first.samples[kind]]),
                }
        for kind, rows in report["results"].items():
            for ref, row in rows.items():
                rounds = ""
                if ref != first.ref:
                    rounds = (
                        f"; per round {row['round_ratio_median']}x, lower in {row['rounds_lower']}"
                        f" of {row['rounds_paired']} (sign test p={row['sign_test_p']})"
                    )
                print(
                    f"[ab] {kind} {ref}: {row['worker_cpu_us_per_request']} us/request "
                    f"({row['cpu_vs_first']}x {first.ref}{rounds}), "
                    f"{row['requests_per_s']} requests/s",
                    file=sys.stderr,
                )
        print(json.dumps(report))
    return 0


def paired(costs: list[float], base: list[float]) -> dict[str, Any]:
    """Each round's cost against the first commit's in the same round. The machine's load
    drifts between rounds far more than within one, so the per-round ratio and how many rounds
    came out lower say more than a ratio of medians: with no real difference, a commit is
    lower in about half the rounds, and the two-sided sign test says how unlikely its count is
    by chance."""
    ratios = [cost / first for cost, first in zip(costs, base, strict=False) if first > 0]
    lower = sum(ratio < 1 for ratio in ratios)
    higher = sum(ratio > 1 for ratio in ratios)  # a tie says nothing either way
    return {
        "round_ratio_median": round(statistics.median(ratios), 3) if ratios else None,
        "rounds_lower": lower,
        "rounds_paired": len(ratios),
        "sign_test_p": float(f"{_sign_test(lower, lower + higher):.2g}"),
    }


def _sign_test(k: int, n: int) -> float:
    """Two-sided: the chance of a count at least this far from n/2 with fair coins."""
    if n == 0:
        return 1.0
    tail = min(k, n - k)
    p = 2 * sum(math.comb(n, i) for i in range(tail + 1)) / 2**n
    return min(1.0, p)


if __name__ == "__main__":
    raise SystemExit(main())
