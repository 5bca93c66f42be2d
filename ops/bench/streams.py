"""Benchmark of the streaming SDK's server side (`python -m ops.bench.streams`): the SDK's own
throughput scenario, run with queen-mq 0.15.0's Stream runner against a real `queen serve`.

5,000 messages over 20 partitions, one runner with max_partitions=8 computing a per-partition
tumbling count and sum in event time and writing it to a sink; the run is checked exactly (every
partition's count and sum, no runner errors) before it is timed. It reports cycles per second and
messages per second of the runner, from its start until it had processed every message.

A fresh PostgreSQL cluster with fsync on and a fresh server (NUM_WORKERS=2) are started here and
torn down at the end, as in ops/bench/run.py; stdout gets one JSON line, progress goes to stderr.
The runner needs the client virtualenv `make compat-clients` builds (.venv-compat/v0.15).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from queen.storage.pgcluster import PgCluster, find_bindir
from tests.support import ServerProcess, create_database, server_env

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "tests" / "compat" / "scripts"
CLIENT_PYTHON = REPO / ".venv-compat" / "v0.15" / "bin" / "python"
SCRIPT_TIMEOUT_S = 300.0


def _say(text: str) -> None:
    print(f"[bench-streams] {text}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="NUM_WORKERS of the server")
    return parser


def run_scenario(url: str, messages: int, partitions: int) -> dict[str, Any]:
    """The throughput scenario of tests/compat/scripts/stream_stories.py, in the client venv."""
    suffix = uuid.uuid4().hex[:10]
    args = {
        "scenario": "throughput",
        "queue": f"bench-stream-src-{suffix}",
        "sink": f"bench-stream-sink-{suffix}",
        "query": f"bench-stream-{suffix}",
        "count": messages,
        "partitions": partitions,
    }
    env = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    }
    env.update(
        PYTHONPATH=str(SCRIPTS),
        QUEEN_URL=url,
        QUEEN_COMPAT_ARGS=json.dumps(args),
        PYTHONUNBUFFERED="1",
    )
    with tempfile.TemporaryDirectory(prefix="queen-bench-streams-") as cwd:
        done = subprocess.run(
            [str(CLIENT_PYTHON), str(SCRIPTS / "stream_stories.py")],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"runner failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def check(result: dict[str, Any], messages: int, partitions: int) -> list[str]:
    """What is wrong with the run's results (empty when every partition's figure is exact)."""
    per_partition = messages // partitions
    expected = {
        f"p{p}": (per_partition - 1, sum(range(per_partition - 1))) for p in range(partitions)
    }
    seen = {
        r["data"]["partition"]: (r["data"]["count"], r["data"]["sum"]) for r in result["results"]
    }
    problems = [
        f"{p}: expected {expected[p]}, got {seen.get(p)}"
        for p in expected
        if seen.get(p) != expected[p]
    ]
    if len(result["results"]) != partitions:
        problems.append(f"{len(result['results'])} results for {partitions} partitions")
    if result["metrics"].get("errorsTotal"):
        problems.append(f"runner errors: {result['metrics']['errorsTotal']}")
    if not result.get("settled"):
        problems.append("the runner did not process every message")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not CLIENT_PYTHON.exists():
        _say(f"{CLIENT_PYTHON} is missing: run `make compat-clients` first")
        return 2
    root = Path(tempfile.mkdtemp(prefix="queen-bench-streams-"))
    os.chmod(root, 0o711)
    cluster = PgCluster(
        data_dir=root / "pg",
        bindir=find_bindir(os.environ.get("QUEEN_PG_BINDIR")),
        settings={"max_connections": "400"},
    )
    server: ServerProcess | None = None
    out: dict[str, Any] = {
        "bench": "streams",
        "messages": args.messages,
        "partitions": args.partitions,
    }
    code = 0
    try:
        _say("starting PostgreSQL (fsync on)")
        cluster.start()
        database = create_database(cluster, "queen_bench_streams")
        env = server_env(cluster, database, NUM_WORKERS=str(args.workers), LOG_LEVEL="warn")
        server = ServerProcess(env=env).start(timeout_s=90.0)
        _say(
            f"running {args.messages} messages over {args.partitions} partitions, max_partitions=8"
        )
        result = run_scenario(server.url, args.messages, args.partitions)
        metrics = result["metrics"]
        elapsed = result["elapsed_s"]
        problems = check(result, args.messages, args.partitions)
        out.update(
            workers=args.workers,
            elapsed_s=round(elapsed, 3),
            cycles=metrics["cyclesTotal"],
            cycles_per_s=round(metrics["cyclesTotal"] / elapsed, 1),
            messages_per_s=round(metrics["messagesTotal"] / elapsed, 1),
            runner_errors=metrics["errorsTotal"],
            exact=not problems,
        )
        if problems:
            out["problems"] = problems
            code = 1
    except Exception as error:
        out["error"] = f"{type(error).__name__}: {error}"
        if server is not None:
            _say("server log tail:\n" + server.log()[-2500:])
        code = 2
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
