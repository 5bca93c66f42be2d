"""Security benchmark (issue 14): what the access gate and encryption at rest cost, each against
its own baseline in the same run (`python -m ops.bench.security`, `--quick` for a smoke run).

Two servers share one PostgreSQL and one database, both with QUEEN_ENCRYPTION_KEY: the main one
with JWT off, a second with JWT on (HS256). Phases, alternated over `--rounds` in A-B, B-A order
so that a drift of the shared machine or the database hits both sides alike:

* push@1 with JWT off vs on (goal: on ≥ 0.9x off): the gate's token check is a cache hit after
  the first request of each connection;
* push@1000 to a plain vs an encryptionEnabled queue on the JWT-off server (goal ≥ 0.7x).

stdout gets one JSON line; `--write-results` appends a section to ops/bench/RESULTS.md. The
other options are those of ops/bench/run.py (workers, connections, durations).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import replace
from typing import Any

import httpx
import jwt

from ops.bench.phases import PhaseSpec
from ops.bench.run import Bench, _parser, _say
from tests.support import ServerProcess

SECRET = "bench-secret-" + os.urandom(24).hex()
GOALS = {"push1_jwt_vs_off": 0.9, "push1000_encrypted_vs_plain": 0.7}


class SecurityBench(Bench):
    def __init__(self, args: Any) -> None:
        args.server_env = [*args.server_env, ("QUEEN_ENCRYPTION_KEY", os.urandom(32).hex())]
        args.phases = ""
        super().__init__(args)
        self.out["bench"] = "queen-security"
        self.gated: ServerProcess | None = None
        self.token = jwt.encode({"sub": "bench", "role": "read-write"}, SECRET, algorithm="HS256")

    def run(self) -> None:
        self.setup()
        self.out["server_env"] = {"QUEEN_ENCRYPTION_KEY": "<random, not shown>"}
        assert self.server is not None
        env = {
            **self.server.env,
            "FILE_BUFFER_DIR": tempfile.mkdtemp(prefix="queen-buf-"),
            "JWT_ENABLED": "true",
            "JWT_ALGORITHM": "HS256",
            "JWT_SECRET": SECRET,
        }
        _say("starting the JWT-enabled server")
        self.gated = ServerProcess(env=env).start(timeout_s=90.0)
        encrypted = f"bench-sealed-{self.run_id}"
        response = httpx.post(
            f"{self.server.url}/api/v1/configure",
            json={"queue": encrypted, "options": {"encryptionEnabled": True}},
        )
        response.raise_for_status()
        rounds: dict[str, list[float]] = {}
        pairs = (
            (
                ("push1_jwt_off", self.server.url, "", f"bench-open-{self.run_id}", 1),
                ("push1_jwt_on", self.gated.url, self.token, f"bench-gated-{self.run_id}", 1),
            ),
            (
                ("push1000_plain", self.server.url, "", f"bench-plain-{self.run_id}", 1000),
                ("push1000_encrypted", self.server.url, "", encrypted, 1000),
            ),
        )
        for index in range(self.args.rounds):
            # A-B then B-A: a side that always ran second would carry the drift of the run
            # (a growing table, the neighbours' load) alone.
            order = [side for pair in pairs for side in (pair if index % 2 == 0 else pair[::-1])]
            for name, url, bearer, queue, size in order:
                connections = (
                    self.args.push1_connections if size == 1 else self.args.push_connections
                )
                spec = PhaseSpec(
                    kind="push", url=url, queue=queue, partitions=self.args.partitions, batch=size
                )
                figures = self._throughput(
                    f"{name}#{index + 1}",
                    replace(spec, bearer=bearer),
                    connections,
                    self.warmup,
                    self.duration,
                )
                rounds.setdefault(name, []).append(figures["per_s"])
                _say(f"{name} round {index + 1}: {figures['per_s']:,.0f} msg/s")
        self.out["security"] = {name: {"msg_per_s": rates} for name, rates in rounds.items()}

    def summarise(self) -> None:
        figures = self.out.get("security") or {}

        def total(name: str) -> float:
            return float(sum(figures.get(name, {}).get("msg_per_s", [])))

        ratios = {
            "push1_jwt_vs_off": _ratio(total("push1_jwt_on"), total("push1_jwt_off")),
            "push1000_encrypted_vs_plain": _ratio(
                total("push1000_encrypted"), total("push1000_plain")
            ),
        }
        self.out["ratios"] = ratios
        self.out["goals_met"] = {
            name: None if value is None else value >= GOALS[name] for name, value in ratios.items()
        }

    def teardown(self, keep_log: bool) -> None:
        if self.gated is not None:
            self.gated.stop()
        super().teardown(keep_log)


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def results_section(out: dict[str, Any], command: str) -> str:
    figures = out.get("security") or {}
    lines = [
        f"## {out['started_at']} — security costs, commit {out.get('commit')}",
        "",
        f"- command: `{command}`; NUM_WORKERS={out['workers']} per server, "
        f"{out['duration_s']:g} s per phase, other load before the start "
        f"{out.get('background_cores_before')} cores",
        "",
        "| phase | msg/s per round |",
        "|---|---|",
        *(
            f"| {name} | {', '.join(f'{rate:,.0f}' for rate in value['msg_per_s'])} |"
            for name, value in figures.items()
        ),
        "",
        f"Ratios (sum over rounds): {json.dumps(out.get('ratios'))}; goals "
        f"{json.dumps(GOALS)} met: {json.dumps(out.get('goals_met'))}.",
        "",
    ]
    if out.get("error"):
        lines.insert(3, f"- **INCOMPLETE**: `{str(out['error'])[:300]}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    parser.prog = "python -m ops.bench.security"
    parser.add_argument("--rounds", type=int, default=2, help="alternations of every phase")
    args = parser.parse_args(argv)
    bench = SecurityBench(args)
    code = 0
    try:
        bench.run()
    except Exception as error:
        bench.out["error"] = f"{type(error).__name__}: {error}"
        _say(f"FAILED: {bench.out['error']}")
        code = 1
    finally:
        bench.teardown(keep_log=code != 0)
    bench.summarise()
    print(json.dumps(bench.out, default=str), flush=True)
    if args.write_results:
        command = "python -m ops.bench.security " + " ".join(sys.argv[1:] if argv is None else argv)
        with args.results_file.open("a") as handle:
            handle.write(results_section(bench.out, command.strip()) + "\n")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
