"""Benchmark of a real `queen serve` against its own PostgreSQL (`python -m ops.bench.run`, or
`make bench`); `--quick` is a smoke run of a few seconds per phase.

Everything is started here and torn down at the end: a fresh PostgreSQL cluster with fsync ON (the
test suite turns it off, which would flatter every figure), a fresh database, and the server with
NUM_WORKERS=2. Phases, in order:

1. raw baseline: 1000-row `INSERT ... unnest($1::jsonb[])` into a plain table, 4 asyncpg
   connections - the ceiling this PostgreSQL offers for the same payloads;
2. push at 1, 100 and 1000 messages per request;
3. pop + batch ack at batch 100 from a pre-filled queue;
4. push→pop latency of a paced single-message producer against a long-polling consumer, with an
   exactly-once check (lost, duplicates);
5. resident memory of every worker process.

stdout gets one JSON line with every figure; progress and failures go to stderr. A phase that the
server refuses stops the run and the first failing request (status and body) is printed.
`--write-results` appends a readable section to ops/bench/RESULTS.md.

The machine is shared by everything above, so each phase also reports who used the CPU (generator,
workers, PostgreSQL, and other processes). For a look inside: `--profile-dir DIR` samples the
workers with py-spy, `--pg-statements` lists the costliest SQL per phase, `--phases` runs a subset,
and `--ref COMMIT` measures a commit exported from git rather than a busy working tree. With
`--pg-setting log_lock_waits=on --pg-setting deadlock_timeout=1ms` the run also counts the lock
waits PostgreSQL logged (postgres_lock_waits).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from ops.bench import procs, profile
from ops.bench.phases import PhaseSpec, Window, child_main
from ops.bench.workload import PAYLOAD_BYTES
from queen.storage.pgcluster import PgCluster, find_bindir
from tests.support import ServerProcess, create_database, run_sql, server_env

REPO = Path(__file__).resolve().parents[2]
RESULTS_FILE = REPO / "ops" / "bench" / "RESULTS.md"
HANDSHAKE_TIMEOUT_S = 90.0
COLLECT_GRACE_S = 90.0
GENERATOR_SATURATED_CORES = 0.85

TARGETS = {
    "push1000_vs_baseline": 0.30,
    "pop_ack_msg_per_s": 10_000,
    "latency_p99_ms": 20.0,
    "rss_mb_per_worker": 100.0,
    "push1_vs_baseline": 0.021,
    "idle_rss_mb_serve_and_workers": 100.0,
    "worker_cpu_us_per_small_request": 350.0,
}
IDLE_SETTLE_S = 3.0
ORIGINAL = (
    "C++ original for scale: push ≈1.1k msg/s at 1/request, ≈9k msg/s at 1000/request "
    "(0.15x raw), pop+ack ≈4k msg/s, push→pop p99 ≈55 ms"
)


POP_PREFILL_PER_S = 30_000
PHASES = ("baseline", "push1", "push100", "push1000", "pop", "latency")
PROFILE_MAX_S = 120.0
QUIET_PROBE_S = 2.0
QUIET_CORES = 0.3
CONTENDED_CORES = 0.3
# CPU the hypervisor took from this machine while it wanted to run: invisible before a phase
# starts (an idle guest is owed nothing) and, in the latency phase, the cause of every tail seen
# so far: runs whose p99 doubled had 0.12-0.87 cores stolen, those near 20 ms under 0.05.
CONTENDED_STEAL_CORES = 0.1
PG_TOP_STATEMENTS = 15
PROFILE_NEEDLES = [
    "(hypercorn/",
    "(h11/",
    "(quart/",
    "(quart_trio/",
    "(queen/http/",
    "(queen/actors/",
    "(asyncpg/",
    "(trio_asyncio/",
    "(logging/",
]


class BenchError(Exception):
    """A phase could not be measured; `phase` names it for the JSON line."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


@dataclass
class PhaseOutcome:
    results: list[dict[str, Any]]
    window: Window
    cpu_cores: dict[str, Any] = field(default_factory=dict)


def _say(text: str) -> None:
    """Progress only: a reader who closed the pipe (`| head`) must not abort the run."""
    with contextlib.suppress(OSError):
        print(f"[bench] {text}", file=sys.stderr, flush=True)


def _key_value(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {raw!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.run", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="a few seconds per phase (smoke run)")
    add("--duration", type=float, help="seconds per throughput phase (default 15, quick 3)")
    add("--latency-duration", type=float, help="seconds of paced pushes (default 25, quick 5)")
    add("--workers", type=int, default=2, help="NUM_WORKERS of the server (default 2)")
    add("--gen-procs", type=int, default=1, help="generator processes per throughput phase")
    add("--partitions", type=int, default=16, help="partitions for push and pop phases")
    add("--push1-connections", type=int, default=32, help="connections at 1 msg/request")
    add("--push-connections", type=int, default=8, help="connections at 100, 1000 msg/request")
    add("--pop-connections", type=int, default=8, help="concurrent pop+ack consumers")
    add("--pop-batch", type=int, default=100)
    add("--baseline-connections", type=int, default=4)
    add("--latency-rate", type=float, default=200.0, help="paced pushes per second")
    add("--prefill", type=int, help="messages pre-filled for pop+ack (default: sized to duration)")
    add("--warmup", type=float, help="seconds of uncounted traffic before each window")
    add(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each phase, wait up to this long for the machine to be idle",
    )
    add("--pg-setting", type=_key_value, action="append", default=[], metavar="KEY=VALUE")
    add("--server-env", type=_key_value, action="append", default=[], metavar="KEY=VALUE")
    add(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    add(
        "--pg-statements",
        action="store_true",
        help="load pg_stat_statements and report the top statements of each phase",
    )
    add("--profile-dir", type=Path, help="record py-spy profiles of the workers per phase here")
    add(
        "--ref",
        help="measure this commit (git archive into a temp dir) instead of the working tree",
    )
    add("--write-results", action="store_true", help=f"append a section to {RESULTS_FILE.name}")
    add("--results-file", type=Path, default=RESULTS_FILE)
    return parser


class Bench:
    """Owns the cluster, the server and the generator processes for one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        quick = args.quick
        self.duration = args.duration or (3.0 if quick else 15.0)
        self.latency_duration = args.latency_duration or (5.0 if quick else 25.0)
        self.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
        self.run_id = datetime.datetime.now(datetime.UTC).strftime("%H%M%S")
        self.out: dict[str, Any] = {
            "bench": "queen",
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": _git("rev-parse", "--short", args.ref) if args.ref else _git_commit(),
            "nproc": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "quick": quick,
            "workers": args.workers,
            "gen_procs": args.gen_procs,
            "duration_s": self.duration,
            "payload_bytes": PAYLOAD_BYTES,
            "error": None,
        }
        self.root: Path | None = None
        self.snapshot: Path | None = None
        self.cluster: PgCluster | None = None
        self.server: ServerProcess | None = None
        self.queen_db = ""
        self.raw_db = ""
        self.rss_samples: dict[str, list[dict[str, Any]]] = {}
        self.profiles: dict[str, Any] = {}
        self.pg_top: dict[str, Any] = {}
        self.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
        unknown = sorted(set(self.phases) - set(PHASES))
        if unknown:
            raise SystemExit(f"unknown phase(s) {unknown}; choose from {','.join(PHASES)}")

    # -- set-up and tear-down ---------------------------------------------------------------

    def background_load(self, seconds: float = 2.0) -> None:
        """Other work on the machine (another test suite, a build) skews every figure here; measure
        it up front so a reader can discount a run made on a busy machine."""
        before = procs.machine_cpu()
        time.sleep(seconds)
        after = procs.machine_cpu()
        busy = round((after["busy"] - before["busy"]) / seconds, 2)
        self.out["background_cores_before"] = busy
        if busy > 0.2:
            _say(f"warning: the machine was already {busy} cores busy before the benchmark")

    def setup(self) -> None:
        self.background_load()
        self.root = Path(tempfile.mkdtemp(prefix="queen-bench-"))
        os.chmod(self.root, 0o711)
        if self.args.ref:
            self.snapshot = _export(self.args.ref, self.root / "src")
            _say(f"measuring commit {self.out['commit']} exported to {self.snapshot}")
        settings = {"max_connections": "400"}
        if self.args.pg_statements:
            settings["shared_preload_libraries"] = "pg_stat_statements"
            settings["pg_stat_statements.track"] = "all"
            # A statement PL/pgSQL plans again on every call shows its cost only as planning
            # time, which pg_stat_statements leaves out unless told (push's targets check did).
            settings["pg_stat_statements.track_planning"] = "on"
        settings.update(dict(self.args.pg_setting))
        self.cluster = PgCluster(
            data_dir=self.root / "pg",
            bindir=find_bindir(os.environ.get("QUEEN_PG_BINDIR")),
            settings=settings,
        )
        _say("starting PostgreSQL (fsync on)")
        self.cluster.start()
        row = run_sql(
            self.cluster,
            "SELECT current_setting('server_version') AS version, current_setting('fsync') AS "
            "fsync, current_setting('synchronous_commit') AS synchronous_commit, "
            "current_setting('full_page_writes') AS full_page_writes, "
            "current_setting('shared_buffers') AS shared_buffers",
        )[0]
        self.out["postgres"] = dict(row)
        self.queen_db = create_database(self.cluster, "queen_bench")
        self.raw_db = create_database(self.cluster, "bench_raw")
        if self.args.pg_statements:
            run_sql(self.cluster, "CREATE EXTENSION pg_stat_statements", database=self.queen_db)
        env = server_env(
            self.cluster,
            self.queen_db,
            NUM_WORKERS=str(self.args.workers),
            LOG_LEVEL="warn",
            **dict(self.args.server_env),
        )
        self.server = ServerProcess(env=env)
        _say(f"starting queen serve, NUM_WORKERS={self.args.workers}")
        with _working_directory(self.snapshot):
            self.server.start(timeout_s=90.0)
        self.out["server_env"] = dict(self.args.server_env)

    def teardown(self, keep_log: bool) -> None:
        """Processes first, reporting after: nothing that can fail (a closed stderr included) may
        stand between a run and stopping the PostgreSQL it started, not even a second signal."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.stop()
        if self.server is not None:
            buffer_dir = self.server.env.get("FILE_BUFFER_DIR")
            if buffer_dir:
                shutil.rmtree(buffer_dir, ignore_errors=True)
            if keep_log:
                _say(f"server log kept at {self.server.log_path}")
            else:
                self.server.log_path.unlink(missing_ok=True)
        if self.cluster is not None:
            log_path = self.cluster.data_dir / "postgres.log"
            self.out["postgres_errors"] = _postgres_errors(log_path)
            if self.out["postgres_errors"]:
                _say(f"PostgreSQL logged errors: {self.out['postgres_errors']}")
            if dict(self.args.pg_setting).get("log_lock_waits") == "on":
                self.out["postgres_lock_waits"] = _lock_waits(log_path)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- generator processes ----------------------------------------------------------------

    def _split(self, spec: PhaseSpec, connections: int) -> list[PhaseSpec]:
        """One spec per generator process; task numbers stay globally unique and evenly strided."""
        count = max(1, min(self.args.gen_procs, connections))
        specs, offset = [], 0
        for index in range(count):
            share = connections // count + (1 if index < connections % count else 0)
            specs.append(
                replace(spec, connections=share, task_offset=offset, task_stride=connections)
            )
            offset += share
        return specs

    def _cpu(self) -> dict[str, procs.CpuSnapshot]:
        assert self.server is not None and self.server.process is not None
        assert self.cluster is not None
        return {
            "server": procs.CpuSnapshot.of(procs.family(self.server.process.pid)),
            "postgres": procs.CpuSnapshot.of(procs.family(self.cluster.pid)),
        }

    def _per_worker(
        self, before: dict[str, procs.CpuSnapshot], after: dict[str, procs.CpuSnapshot], wall: float
    ) -> list[float]:
        """Workers share the port through SO_REUSEPORT, which spreads connections, not requests:
        one worker at ~1 core while the other idles means the kernel's split, not the code, is
        the limit."""
        assert self.server is not None and self.server.process is not None
        serve = self.server.process.pid
        old, new = before["server"].times, after["server"].times
        return [
            round((new[pid] - old[pid]) / wall, 2)
            for pid in sorted(new)
            if pid != serve and pid in old
        ]

    def run_phase(
        self, name: str, specs: list[PhaseSpec], warmup_s: float, duration_s: float, grace_s: float
    ) -> PhaseOutcome:
        self._settle()
        self._wait_quiet(name)
        ctx = multiprocessing.get_context("spawn")
        running: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        try:
            for spec in specs:
                parent, child = ctx.Pipe()
                process = ctx.Process(
                    target=child_main, args=(spec, child), name=f"bench-{name}", daemon=True
                )
                process.start()
                child.close()
                running.append((process, parent))
            for _, conn in running:
                if not conn.poll(HANDSHAKE_TIMEOUT_S):
                    raise BenchError(name, "a generator process did not start")
                conn.recv()
            self._reset_statements()
            start_at = time.monotonic() + warmup_s
            window = Window(start_at, start_at + duration_s)
            for _, conn in running:
                conn.send(window)
            time.sleep(max(0.0, start_at - time.monotonic()))
            cpu_before, wall_before = self._cpu(), time.monotonic()
            machine_before = machine_after = procs.machine_cpu()
            checkpoints_before = checkpoints_after = self._checkpoints()
            recordings = self._start_profile(name, duration_s)
            results: dict[Connection, dict[str, Any]] = {}
            pending = [conn for _, conn in running]
            cpu_after: dict[str, procs.CpuSnapshot] | None = None
            wall_after = 0.0
            deadline = window.end_at + grace_s
            while pending and time.monotonic() < deadline:
                if cpu_after is None and time.monotonic() >= window.end_at:
                    cpu_after, wall_after = self._cpu(), time.monotonic()
                    machine_after = procs.machine_cpu()
                    checkpoints_after = self._checkpoints()
                until = window.end_at if cpu_after is None else deadline
                for conn in wait(pending, timeout=max(0.0, until - time.monotonic())):
                    try:
                        result = conn.recv()  # type: ignore[union-attr]
                    except EOFError:
                        result = {"error": "generator process died without a result"}
                    results[conn] = result  # type: ignore[index]
                    pending.remove(conn)
                    if result.get("error"):
                        raise BenchError(name, str(result["error"]))
            if pending:
                raise BenchError(name, f"no result within {duration_s + grace_s:.0f}s")
            if cpu_after is None:
                cpu_after, wall_after = self._cpu(), time.monotonic()
                machine_after = procs.machine_cpu()
                checkpoints_after = self._checkpoints()
            self._finish_profile(name, recordings)
            self._top_statements(name)
            wall = max(wall_after - wall_before, 1e-9)
            cores: dict[str, Any] = {
                key: round(cpu_after[key].since(cpu_before[key]) / wall, 2) for key in cpu_after
            }
            cores["server_per_worker"] = self._per_worker(cpu_before, cpu_after, wall)
            answered = sum(r.get("http_requests_in_window", 0) for r in results.values())
            cores["http_requests"] = answered
            cores["worker_cpu_us_per_request"] = (
                round(sum(cores["server_per_worker"]) * wall / answered * 1e6) if answered else None
            )
            for key in ("busy", "steal"):
                spent = machine_after[key] - machine_before[key]
                cores[f"machine_{key}"] = round(spent / wall, 2)
            ordered = [results[conn] for _, conn in running]
            gen = [r["cpu_s"] / r["cpu_wall_s"] for r in ordered if r.get("cpu_wall_s")]
            cores["generator"] = round(sum(gen), 2) if gen else None
            cores["generator_max_per_process"] = round(max(gen), 2) if gen else None
            ours = sum(cores.get(k) or 0.0 for k in ("server", "postgres", "generator"))
            cores["other"] = round(max(0.0, cores["machine_busy"] - ours), 2)
            cores["checkpoints"] = checkpoints_after - checkpoints_before
            return PhaseOutcome(ordered, window, cores)
        finally:
            for process, conn in running:
                if process.is_alive():
                    process.terminate()
                process.join(5)
                conn.close()

    def _wait_quiet(self, name: str) -> None:
        """On a shared machine another test suite can take a whole core; starting a phase in a
        quiet moment is the best we can do (the `other` figure shows what happened during it)."""
        limit = self.args.wait_quiet
        if not limit:
            return
        deadline = time.monotonic() + limit
        while True:
            before = procs.machine_cpu()
            time.sleep(QUIET_PROBE_S)
            busy = (procs.machine_cpu()["busy"] - before["busy"]) / QUIET_PROBE_S
            if busy <= QUIET_CORES:
                return
            if time.monotonic() >= deadline:
                _say(f"{name}: machine still {busy:.2f} cores busy after {limit:g}s; going ahead")
                return

    def _settle(self) -> None:
        """Each phase starts with no debt of the ones before it: a push phase leaves millions of
        rows for autovacuum and enough WAL to trigger a checkpoint, and both would otherwise
        land in the next phase's window (seen: the latency phase's p99 at 22-32 ms in full runs,
        11-15 ms when it ran after fewer phases). Checkpoints that still start inside a window
        are counted there."""
        assert self.cluster is not None
        if self.queen_db:
            run_sql(self.cluster, "VACUUM (ANALYZE)", database=self.queen_db)
        run_sql(self.cluster, "CHECKPOINT")

    def _checkpoints(self) -> int:
        """Checkpoints started so far (the counters moved to their own view in PostgreSQL 17)."""
        assert self.cluster is not None
        version = int(run_sql(self.cluster, "SHOW server_version_num")[0][0])
        sql = (
            "SELECT num_timed + num_requested AS n FROM pg_stat_checkpointer"
            if version >= 170000
            else "SELECT checkpoints_timed + checkpoints_req AS n FROM pg_stat_bgwriter"
        )
        return int(run_sql(self.cluster, sql)[0]["n"])

    def _reset_statements(self) -> None:
        if self.args.pg_statements and self.cluster is not None:
            run_sql(self.cluster, "SELECT pg_stat_statements_reset()", database=self.queen_db)

    def _top_statements(self, name: str) -> None:
        """PostgreSQL's side of the profile: which statements (nested ones inside the queen.*
        functions included) took the database time of this phase."""
        if not self.args.pg_statements or self.cluster is None:
            return
        rows = run_sql(
            self.cluster,
            "SELECT calls, round((total_exec_time + total_plan_time)::numeric, 1) AS total_ms, "
            "round(mean_exec_time::numeric, 3) AS mean_ms, "
            "round(max_exec_time::numeric, 1) AS max_ms, plans, "
            "round(total_plan_time::numeric, 1) AS plan_ms, rows, toplevel, "
            "left(regexp_replace(query, '\\s+', ' ', 'g'), 140) AS query "
            "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) "
            "ORDER BY total_exec_time + total_plan_time DESC LIMIT $1",
            PG_TOP_STATEMENTS,
            database=self.queen_db,
        )
        top = [{k: (float(v) if k.endswith("_ms") else v) for k, v in r.items()} for r in rows]
        self.pg_top[name] = top
        _say(f"{name}: top PostgreSQL statements by total time (nested included):")
        for row in top[:5]:
            _say(
                f"    {row['total_ms']:>10,.0f} ms total, {row['calls']:>7} calls, "
                f"{row['mean_ms']:8.2f} ms mean {row['max_ms']:8.1f} max "
                f"{row['plan_ms']:8,.0f} ms planning ({row['plans']} plans)  {row['query'][:80]}"
            )

    def _start_profile(self, name: str, duration_s: float) -> list[profile.Recording]:
        if self.args.profile_dir is None or duration_s > PROFILE_MAX_S:
            return []
        assert self.server is not None and self.server.process is not None
        workers = procs.children(self.server.process.pid)
        return profile.start(self.args.profile_dir, name, workers, duration_s)

    def _finish_profile(self, name: str, recordings: list[profile.Recording]) -> None:
        if not recordings:
            return
        paths = profile.finish(recordings)
        top = profile.top_frames(paths)
        packages = profile.self_by_package(paths)
        through = profile.inclusive(paths, PROFILE_NEEDLES)
        own = profile.own_functions(paths)
        self.profiles[name] = {
            "files": [str(p) for p in paths],
            "self_by_package_pct": packages,
            "top_self_frames_pct": top,
            "inclusive_pct": through,
            "queen_functions_inclusive_pct": own,
        }
        _say(f"{name} profile, self time by package (% of worker samples):")
        _say("    " + ", ".join(f"{package} {pct}" for package, pct in packages))
        _say("  inclusive: " + ", ".join(f"{k.strip('(/')} {v}" for k, v in through.items()))
        _say("  queen functions, inclusive: " + ", ".join(f"{f} {p}" for f, p in own[:8]))

    def _throughput(
        self, name: str, spec: PhaseSpec, connections: int, warmup_s: float, duration_s: float
    ) -> dict[str, Any]:
        grace = COLLECT_GRACE_S
        outcome = self.run_phase(name, self._split(spec, connections), warmup_s, duration_s, grace)
        count = sum(r["count"] for r in outcome.results)
        requests = sum(r["requests"] for r in outcome.results)
        last = max(r["last_done"] for r in outcome.results)
        seconds = last - outcome.window.start_at if count else 0.0
        figures: dict[str, Any] = {
            "per_s": round(count / seconds, 1) if seconds > 0 else 0.0,
            "count": count,
            "requests": requests,
            "seconds": round(seconds, 2),
            "connections": connections,
            "gen_procs": len(outcome.results),
            "cpu_cores": outcome.cpu_cores,
            "generator_saturated": (outcome.cpu_cores.get("generator_max_per_process") or 0)
            >= GENERATOR_SATURATED_CORES,
        }
        for result in outcome.results:
            for key, value in result.items():
                if key not in (
                    "count",
                    "requests",
                    "last_done",
                    "cpu_s",
                    "cpu_wall_s",
                    "http_requests_in_window",
                ):
                    figures[key] = _add(figures.get(key), value)
        self._sample_rss(name)
        return figures

    def _sample_rss(self, when: str) -> None:
        assert self.server is not None and self.server.process is not None
        workers = procs.children(self.server.process.pid)
        self.rss_samples[when] = [{"pid": pid, **procs.memory_mb(pid)} for pid in workers]

    # -- phases -----------------------------------------------------------------------------

    def baseline(self) -> None:
        assert self.cluster is not None
        dsn = {**self.cluster.dsn_parts(), "database": self.raw_db}
        spec = PhaseSpec(kind="baseline", dsn=dsn, batch=1000)
        connections = self.args.baseline_connections
        outcome = self.run_phase(
            "baseline",
            [replace(spec, connections=connections)],
            self.warmup,
            self.duration,
            COLLECT_GRACE_S,
        )
        result = outcome.results[0]
        seconds = result["last_done"] - outcome.window.start_at
        rate = round(result["count"] / seconds, 1) if seconds > 0 else 0.0
        self.out["baseline"] = {
            "rows_per_s": rate,
            "rows": result["count"],
            "batches": result["requests"],
            "seconds": round(seconds, 2),
            "connections": connections,
            "batch": 1000,
            "sql": "INSERT INTO bench_raw (payload) SELECT * FROM unnest($1::jsonb[])",
            "table": "bench_raw (payload jsonb NOT NULL), no index",
            "cpu_cores": outcome.cpu_cores,
        }
        _say(
            f"baseline: {rate:,.0f} rows/s ({connections} asyncpg connections) "
            + _cpu_text(outcome.cpu_cores)
        )
        # Millions of rows nobody reads again, whose autovacuum would otherwise run during the
        # server's phases.
        run_sql(self.cluster, f'DROP DATABASE "{self.raw_db}"')

    def push(self, per_request: int, connections: int) -> None:
        name = f"push@{per_request}"
        spec = PhaseSpec(
            kind="push",
            url=self._url(),
            queue=f"bench-push{per_request}-{self.run_id}",
            partitions=self.args.partitions,
            batch=per_request,
        )
        figures = self._throughput(name, spec, connections, self.warmup, self.duration)
        figures["msg_per_s"] = figures.pop("per_s")
        figures["requests_per_s"] = (
            round(figures["requests"] / figures["seconds"], 1) if figures["seconds"] else 0.0
        )
        figures["partitions"] = self.args.partitions
        self.out.setdefault("push", {})[str(per_request)] = figures
        _say(
            f"{name}: {figures['msg_per_s']:,.0f} msg/s, {figures['requests_per_s']:,.0f} req/s "
            f"({connections} connections) " + _cpu_text(figures["cpu_cores"])
        )

    def pop_ack(self) -> None:
        queue = f"bench-pop-{self.run_id}"
        prefill = self.args.prefill
        if prefill is None:
            # Enough for the window at well above the target rate: a drained queue ends the
            # phase early and its rate then covers only part of the window.
            prefill = int(POP_PREFILL_PER_S * (self.duration + self.warmup))
        requests = math.ceil(prefill / 1000)
        fill = PhaseSpec(
            kind="push",
            url=self._url(),
            queue=queue,
            partitions=self.args.partitions,
            batch=1000,
            total_requests=requests,
        )
        _say(f"pre-filling {requests * 1000:,} messages into {self.args.partitions} partitions")
        started = time.monotonic()
        filled = self._throughput("prefill", fill, self.args.push_connections, 0.0, 900.0)
        if filled["count"] != requests * 1000:
            raise BenchError("prefill", f"pushed {filled['count']} of {requests * 1000} messages")
        _say(f"pre-filled in {time.monotonic() - started:.1f}s ({filled['per_s']:,.0f} msg/s)")
        spec = PhaseSpec(
            kind="pop_ack",
            url=self._url(),
            queue=queue,
            batch=self.args.pop_batch,
            partitions=self.args.partitions,
        )
        connections = self.args.pop_connections
        figures = self._throughput("pop+ack", spec, connections, self.warmup, self.duration)
        figures["msg_per_s"] = figures.pop("per_s")
        figures["batch"] = self.args.pop_batch
        figures["prefilled"] = requests * 1000
        figures["prefill_msg_per_s"] = filled["per_s"]
        figures["drained"] = figures.pop("acked_total") >= requests * 1000
        self.out["pop_ack"] = figures
        drained = " (queue drained before the window ended)" if figures["drained"] else ""
        _say(
            f"pop+ack: {figures['msg_per_s']:,.0f} msg/s at batch {self.args.pop_batch} "
            f"({connections} consumers){drained} " + _cpu_text(figures["cpu_cores"])
        )

    def latency(self) -> None:
        spec = PhaseSpec(
            kind="latency",
            url=self._url(),
            queue=f"bench-latency-{self.run_id}",
            batch=100,
            connections=16,
            rate=self.args.latency_rate,
            drain_s=10.0,
            poll_timeout_ms=5000,
        )
        outcome = self.run_phase(
            "latency", [spec], 1.0, self.latency_duration, COLLECT_GRACE_S + 20.0
        )
        skip = ("cpu_s", "cpu_wall_s", "http_requests_in_window")
        figures = {k: v for k, v in outcome.results[0].items() if k not in skip}
        figures["rate"] = self.args.latency_rate
        figures["seconds"] = self.latency_duration
        figures["cpu_cores"] = outcome.cpu_cores
        self.out["latency"] = figures
        self._sample_rss("latency")
        _say(
            f"latency @{self.args.latency_rate:.0f} msg/s: p50 {figures['p50_ms']} ms, "
            f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms; pushed "
            f"{figures['pushed_2xx']}, delivered {figures['delivered']}, lost {figures['lost']}, "
            f"duplicates {figures['duplicates']}; host steal {outcome.cpu_cores['machine_steal']} "
            "cores"
        )
        if figures["first_push_failure"]:
            _say(f"first failed push: {figures['first_push_failure']}")

    def idle_memory(self) -> None:
        """RSS of `queen serve` and its workers before any load, once start-up work (slots
        connecting, warm-up calls) is over: what an idle server costs."""
        assert self.server is not None and self.server.process is not None
        time.sleep(IDLE_SETTLE_S)
        serve = self.server.process.pid
        rows = [
            {"pid": pid, "VmRSS": procs.memory_mb(pid).get("VmRSS"), "Pss": procs.pss_mb(pid)}
            for pid in procs.family(serve)
        ]
        total = sum(row["VmRSS"] or 0.0 for row in rows)
        pss = sum(row["Pss"] or 0.0 for row in rows)
        self.out["idle_rss_mb"] = {
            "serve": rows[0]["VmRSS"],
            "workers": [row["VmRSS"] for row in rows[1:]],
            "total": round(total, 1),
            "pss_total": round(pss, 1),
        }
        _say(
            f"idle RSS (MB): serve {rows[0]['VmRSS']}, workers "
            f"{[row['VmRSS'] for row in rows[1:]]}, total {total:.1f} (PSS {pss:.1f})"
        )

    def rss(self) -> None:
        self._sample_rss("end")
        final = self.rss_samples["end"]
        peak = [w.get("VmHWM", 0.0) for w in final]
        during = [w.get("VmRSS", 0.0) for sample in self.rss_samples.values() for w in sample]
        self.out["rss_mb"] = {
            "workers": final,
            "max_rss_sampled": max(during, default=None),
            "max_hwm": max(peak, default=None),
            "samples": {k: [w.get("VmRSS") for w in v] for k, v in self.rss_samples.items()},
        }
        _say(
            "worker RSS (MB) at the end: "
            + ", ".join(f"{w.get('VmRSS')} (peak {w.get('VmHWM')})" for w in final)
        )

    def _url(self) -> str:
        assert self.server is not None
        return self.server.url

    # -- summary ------------------------------------------------------------------------------

    def summarise(self) -> None:
        base = (self.out.get("baseline") or {}).get("rows_per_s")
        push = self.out.get("push", {})
        ratios: dict[str, float | None] = {}
        for size in ("1", "100", "1000"):
            rate = push.get(size, {}).get("msg_per_s")
            ratios[f"push{size}_vs_baseline"] = round(rate / base, 3) if rate and base else None
        pop = (self.out.get("pop_ack") or {}).get("msg_per_s")
        ratios["pop_ack_vs_baseline"] = round(pop / base, 3) if pop and base else None
        self.out["ratios"] = ratios
        latency = self.out.get("latency") or {}
        rss = (self.out.get("rss_mb") or {}).get("max_hwm")
        idle = (self.out.get("idle_rss_mb") or {}).get("total")
        push1_cpu = ((push.get("1") or {}).get("cpu_cores") or {}).get("worker_cpu_us_per_request")
        p99 = latency.get("p99_ms")
        push_ratio = ratios["push1000_vs_baseline"]
        self.out["targets"] = {
            "push1000_vs_baseline>=0.30": None
            if push_ratio is None
            else push_ratio >= TARGETS["push1000_vs_baseline"],
            "pop_ack>=10000": None if pop is None else pop >= TARGETS["pop_ack_msg_per_s"],
            "latency_p99<=20ms_and_0_lost": None
            if p99 is None
            else p99 <= TARGETS["latency_p99_ms"]
            and latency.get("lost") == 0
            and latency.get("duplicates") == 0,
            "rss<=100MB_per_worker": None if rss is None else rss <= TARGETS["rss_mb_per_worker"],
            "push1_vs_baseline>=0.021": None
            if ratios["push1_vs_baseline"] is None
            else ratios["push1_vs_baseline"] >= TARGETS["push1_vs_baseline"],
            "idle_rss<=100MB_serve_and_workers": None
            if idle is None
            else idle <= TARGETS["idle_rss_mb_serve_and_workers"],
            "push1_worker_cpu<=350us_per_request": None
            if push1_cpu is None
            else push1_cpu <= TARGETS["worker_cpu_us_per_small_request"],
        }
        named = {
            "baseline": self.out.get("baseline"),
            **{f"push@{k}": v for k, v in push.items()},
            "pop_ack": self.out.get("pop_ack"),
            "latency": self.out.get("latency"),
        }
        self.out["contended_phases"] = {
            name: {key: figures["cpu_cores"].get(key) for key in ("other", "machine_steal")}
            for name, figures in named.items()
            if figures
            and (
                (figures["cpu_cores"].get("other") or 0) > CONTENDED_CORES
                or (figures["cpu_cores"].get("machine_steal") or 0) > CONTENDED_STEAL_CORES
            )
        }
        phases = [self.out.get("baseline"), *push.values(), self.out.get("pop_ack")]
        self.out["generator_saturated_in"] = [
            name
            for name, figures in zip(
                ["baseline", *(f"push@{k}" for k in push), "pop_ack"], phases, strict=True
            )
            if figures
            and (figures["cpu_cores"].get("generator_max_per_process") or 0)
            >= GENERATOR_SATURATED_CORES
        ]

    def run(self) -> None:
        self.setup()
        self.idle_memory()
        steps = {
            "baseline": self.baseline,
            "push1": lambda: self.push(1, self.args.push1_connections),
            "push100": lambda: self.push(100, self.args.push_connections),
            "push1000": lambda: self.push(1000, self.args.push_connections),
            "pop": self.pop_ack,
            "latency": self.latency,
        }
        for name in PHASES:
            if name in self.phases:
                steps[name]()
        self.rss()
        if self.profiles:
            self.out["profiles"] = self.profiles
        if self.pg_top:
            self.out["pg_top_statements"] = self.pg_top


def _add(total: Any, value: Any, key: str = "") -> Any:
    """Merges what generator processes of one phase report: counts add up; round-trip
    percentiles cannot be added, so the worst process's figure is kept."""
    if total is None:
        return value
    if value is None:
        return total
    if isinstance(value, dict):
        return {k: _add(total.get(k), value.get(k), k) for k in {**total, **value}}
    if key in ("p50", "p99", "max"):
        return max(total, value)
    return total + value


def _cpu_text(cores: dict[str, Any]) -> str:
    return (
        f"[cores busy: generator {cores.get('generator')}, server {cores.get('server')} "
        f"(workers {cores.get('server_per_worker')}), postgres {cores.get('postgres')}, "
        f"machine {cores.get('machine_busy')} of {os.cpu_count()}, of which not ours "
        f"{cores.get('other')}; worker CPU {cores.get('worker_cpu_us_per_request')} us/request]"
    )


def _git_commit() -> str | None:
    """The commit, marked `+dirty` when the server code differs from it: the benchmark measures
    the working tree, and a shared tree often holds someone's uncommitted work."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "queen", "sql")
        return head + ("+dirty" if dirty else "")
    return None


def _postgres_errors(log_path: Path) -> dict[str, int]:
    """Errors PostgreSQL logged during the run, by message: deadlocks and lock timeouts that the
    server retries silently still show up here (and in the latency tail)."""
    counts: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            _, marker, message = line.partition(" ERROR:  ")
            if marker:
                counts[message.strip()[:100]] += 1
    return dict(counts.most_common(8))


def _lock_waits(log_path: Path) -> dict[str, int]:
    """Lock waits longer than deadlock_timeout, as `--pg-setting log_lock_waits=on` logs them
    (with `--pg-setting deadlock_timeout=1ms`, every wait of a millisecond or more), counted by
    the statement that waited."""
    counts: Counter[str] = Counter()
    waiting = False
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if "still waiting for" in line:
                waiting = True
            elif waiting and "STATEMENT:  " in line:
                counts[line.partition("STATEMENT:  ")[2].strip()[:60]] += 1
                waiting = False
    return dict(counts.most_common(8))


@contextlib.contextmanager
def _working_directory(path: Path | None) -> Iterator[None]:
    """`python -m queen` imports from its working directory first, so starting the server inside
    an exported snapshot runs that snapshot's code (workers inherit the directory)."""
    _compile_bytecode(path or REPO)
    if path is None:
        yield
        return
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _compile_bytecode(tree: Path) -> None:
    """Bytecode for every module of the server under test, as an installed package has: where
    PYTHONDONTWRITEBYTECODE is set (it is on this machine) and the .pyc files are missing or
    stale, every process would compile those modules from source at start, and the compiler's
    leftovers showed up as ~0.5-1 MB more idle RSS per process."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(tree / "queen")],
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _export(ref: str, target: Path) -> Path:
    """A clean copy of `ref`, so a shared working tree with half-done edits cannot break the
    measurement. The editable install maps `queen.sql` to the live `sql/` directory; a `queen/sql`
    link inside the copy wins over that mapping, so migrations come from the snapshot too."""
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    link = target / "queen" / "sql"
    if not link.exists() and (target / "sql").is_dir():
        link.symlink_to(target / "sql", target_is_directory=True)
    return target


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:,.2f}{unit}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}x"


def _rows(out: dict[str, Any]) -> Iterator[str]:
    base = out.get("baseline") or {}
    push = out.get("push", {})
    ratios = out.get("ratios", {})
    pop = out.get("pop_ack") or {}
    lat = out.get("latency") or {}
    rss = out.get("rss_mb") or {}
    yield "| figure | measured | target | C++ original |"
    yield "|---|---|---|---|"
    yield (
        f"| raw INSERT baseline ({base.get('connections', 4)} conns, 1000-row batches) "
        f"| {_fmt(base.get('rows_per_s'))} rows/s | — | — |"
    )
    originals = {"1": "≈1.1k msg/s", "100": "—", "1000": "≈9k msg/s (0.15x raw)"}
    for size in ("1", "100", "1000"):
        figures = push.get(size) or {}
        ratio = ratios.get(f"push{size}_vs_baseline")
        target = {"1": "≥ 0.021x baseline", "1000": "≥ 0.30x baseline"}.get(size, "—")
        yield (
            f"| push, {size} msg/request ({figures.get('connections', '?')} conns) "
            f"| {_fmt(figures.get('msg_per_s'))} msg/s ({_ratio(ratio)} baseline) "
            f"| {target} | {originals[size]} |"
        )
    yield (
        f"| pop + batch ack, batch {pop.get('batch', 100)} ({pop.get('connections', '?')} "
        f"consumers) | {_fmt(pop.get('msg_per_s'))} msg/s | ≥ 10,000 msg/s | ≈4k msg/s |"
    )
    yield (
        f"| push→pop latency @ {_fmt(lat.get('rate'))} msg/s, 1 partition "
        f"| p50 {_fmt(lat.get('p50_ms'))} ms, p99 {_fmt(lat.get('p99_ms'))} ms, "
        f"lost {lat.get('lost', '—')}, duplicates {lat.get('duplicates', '—')} "
        f"| p99 ≤ 20 ms, 0 lost | p99 ≈55 ms |"
    )
    yield (f"| RSS per worker (peak, end of load) | {_fmt(rss.get('max_hwm'))} MB | ≤ 100 MB | — |")
    idle = out.get("idle_rss_mb") or {}
    yield (
        f"| RSS idle, `queen serve` + workers | {_fmt(idle.get('total'))} MB (serve "
        f"{_fmt(idle.get('serve'))}, workers {idle.get('workers')}; PSS "
        f"{_fmt(idle.get('pss_total'))} MB) | ≤ 100 MB | 19 MB |"
    )


def _cpu_rows(out: dict[str, Any]) -> Iterator[str]:
    named: list[tuple[str, dict[str, Any] | None]] = [("baseline", out.get("baseline"))]
    named += [(f"push@{k}", v) for k, v in out.get("push", {}).items()]
    named += [("pop+ack", out.get("pop_ack")), ("latency", out.get("latency"))]
    yield (
        "| phase | generator (busiest process) | server (per worker) | PostgreSQL "
        "| whole machine (steal) | not ours | checkpoints | worker CPU per HTTP request |"
    )
    yield "|---|---|---|---|---|---|---|---|"
    for name, figures in named:
        if figures:
            c = figures["cpu_cores"]
            workers = " / ".join(str(w) for w in c.get("server_per_worker", []))
            yield (
                f"| {name} | {c.get('generator')} ({c.get('generator_max_per_process')}) "
                f"| {c.get('server')} ({workers}) | {c.get('postgres')} "
                f"| {c.get('machine_busy')} ({c.get('machine_steal')}) | {c.get('other')} "
                f"| {c.get('checkpoints', '—')} "
                f"| {_fmt(c.get('worker_cpu_us_per_request'), ' us')} |"
            )


def results_section(out: dict[str, Any], command: str) -> str:
    pg = out.get("postgres", {})
    lines = [
        f"## {out['started_at']} — commit {out.get('commit')}",
        "",
        f"- machine: nproc={out['nproc']} ({out['machine']}), Python {out['python']}, "
        f"PostgreSQL {pg.get('version')} (fsync={pg.get('fsync')}, "
        f"synchronous_commit={pg.get('synchronous_commit')}, "
        f"shared_buffers={pg.get('shared_buffers')})",
        f"- command: `{command}`",
        f"- server: NUM_WORKERS={out['workers']}"
        + (f", env {out['server_env']}" if out.get("server_env") else "")
        + f"; generator processes per phase: {out['gen_procs']}; "
        f"{out['duration_s']:g} s per throughput phase; payload {out['payload_bytes']} bytes",
    ]
    lines.append(
        f"- other load on the machine just before the start: {out.get('background_cores_before')} "
        "cores (the `not ours` column below is other processes' CPU during each phase)"
    )
    contended = out.get("contended_phases")
    if contended:
        listed = ", ".join(
            f"{name} ({cores['other']} cores of other processes, {cores['machine_steal']} "
            "stolen by the host)"
            for name, cores in contended.items()
        )
        lines.append(f"- **shared machine** during {listed}; those figures understate the server")
    if out.get("error"):
        lines.append(
            f"- **INCOMPLETE**: phase `{out['error']['phase']}` failed: "
            f"`{out['error']['message'][:300]}`"
        )
    lines += ["", *_rows(out), "", f"{ORIGINAL}.", ""]
    lines += [
        "CPU cores busy during each phase's window, and the checkpoints that started in it "
        "(VACUUM ANALYZE and CHECKPOINT run before each phase):",
        "",
        *_cpu_rows(out),
        "",
    ]
    saturated = out.get("generator_saturated_in")
    if saturated:
        lines += [f"Generator saturated (≥ {GENERATOR_SATURATED_CORES} core) in: {saturated}.", ""]
    return "\n".join(lines) + "\n"


def write_results(out: dict[str, Any], path: Path, command: str) -> None:
    header = "" if path.exists() else "# Benchmark results\n\nAppended by `--write-results`.\n\n"
    with path.open("a") as handle:
        handle.write(header + results_section(out, command) + "\n")
    _say(f"appended a section to {path}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A plain `kill` must tear down like Ctrl-C: the server and PostgreSQL run in sessions of
    # their own and would otherwise outlive us.
    signal.signal(signal.SIGTERM, _interrupt)
    bench = Bench(args)
    code = 0
    try:
        bench.run()
    except BenchError as error:
        bench.out["error"] = {"phase": error.phase, "message": str(error)}
        _say(f"phase {error.phase} FAILED:\n    {error}")
        if bench.server is not None:
            _say("server log tail:\n" + bench.server.log()[-2500:])
        code = 1
    except KeyboardInterrupt:
        bench.out["error"] = {"phase": "interrupted", "message": "KeyboardInterrupt"}
        code = 130
    except Exception as error:
        phase = "setup" if bench.server is None else "unexpected"
        bench.out["error"] = {"phase": phase, "message": f"{type(error).__name__}: {error}"}
        _say(f"FAILED ({phase}):\n" + "".join(traceback.format_exception(error)))
        code = 2
    finally:
        bench.teardown(keep_log=code != 0)
    bench.summarise()
    print(json.dumps(bench.out, default=str), flush=True)
    if args.write_results:
        command = "python -m ops.bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
        write_results(bench.out, args.results_file, command.strip())
    return code


if __name__ == "__main__":
    raise SystemExit(main())
