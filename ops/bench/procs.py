"""Process accounting from /proc: on a 2-core machine the generator, the server workers and
PostgreSQL share the CPUs, so a throughput figure means little without knowing who was busy."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; everything after the last ')' is fixed.
    return raw[raw.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pid: int) -> float | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of one process, in MiB."""
    result: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                result[key] = round(int(value.split()[0]) / 1024, 1)
    return result


def pss_mb(pid: int) -> float | None:
    """Proportional set size: RSS with each shared page split among the processes mapping it, so
    the PSS of `queen serve` and its workers adds up to what they cost the machine together."""
    with contextlib.suppress(OSError):
        for line in (_PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Pss":
                return round(int(value.split()[0]) / 1024, 1)
    return None


@dataclass
class CpuSnapshot:
    """Per-process CPU seconds of a process family; processes that start or exit between two
    snapshots are left out of the difference rather than guessed."""

    times: dict[int, float]

    @classmethod
    def of(cls, pids: list[int]) -> CpuSnapshot:
        times = {}
        for pid in pids:
            seconds = cpu_seconds(pid)
            if seconds is not None:
                times[pid] = seconds
        return cls(times)

    def since(self, earlier: CpuSnapshot) -> float:
        return sum(t - earlier.times[pid] for pid, t in self.times.items() if pid in earlier.times)


def machine_cpu() -> dict[str, float]:
    """Machine-wide busy and steal seconds: catches CPU spent outside the watched processes
    (kernel networking on loopback, other tenants of a virtual machine)."""
    fields = [int(v) for v in (_PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return {
        "busy": (user + nice + system + irq + softirq + steal) / _CLK_TCK,
        "steal": steal / _CLK_TCK,
        "idle": (idle + iowait) / _CLK_TCK,
    }


def family(pid: int | None) -> list[int]:
    """A process and its direct children (postmaster + backends, `queen serve` + workers)."""
    if pid is None:
        return []
    return [pid, *children(pid)]
