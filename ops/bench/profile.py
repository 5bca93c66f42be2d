"""Optional py-spy sampling of the server workers during a phase (`--profile-dir`): CPU figures
say the server is busy, a profile says on what. py-spy is not a dependency; install it into the
venv (`pip install py-spy`) to use this."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE_HZ = 200
TOP_FRAMES = 12


@dataclass
class Recording:
    process: subprocess.Popen[bytes]
    output: Path


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.is_file() else shutil.which("py-spy")


def start(directory: Path, phase: str, pids: list[int], seconds: float) -> list[Recording]:
    """One py-spy per worker; `--nonblocking` so sampling never pauses the server it measures."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("--profile-dir needs py-spy: .venv/bin/pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    recordings = []
    for pid in pids:
        output = directory / f"{phase.replace('@', '')}-{pid}.collapsed.txt"
        argv = [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(SAMPLE_RATE_HZ),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
        ]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        recordings.append(Recording(process, output))
    return recordings


def finish(recordings: list[Recording], timeout_s: float = 30.0) -> list[Path]:
    done = []
    for recording in recordings:
        try:
            recording.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            recording.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                recording.process.wait(5)
        if recording.output.is_file():
            done.append(recording.output)
    return done


def _samples(paths: list[Path]) -> Iterator[tuple[str, int]]:
    """(stack, sample count) of every well-formed line of the collapsed-stack files."""
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                yield stack, int(count)


def top_frames(paths: list[Path], limit: int = TOP_FRAMES) -> list[tuple[str, float]]:
    """Leaf frames by share of samples across the given collapsed-stack files (self time)."""
    leaves: Counter[str] = Counter()
    for stack, count in _samples(paths):
        leaves[stack.rsplit(";", 1)[-1]] += count
    total = sum(leaves.values()) or 1
    return [(frame, round(100 * n / total, 1)) for frame, n in leaves.most_common(limit)]


def self_by_package(paths: list[Path], limit: int = TOP_FRAMES) -> list[tuple[str, float]]:
    """Self time grouped by the top-level package of the leaf frame's file: the quickest answer
    to "HTTP stack, event loops, driver or our own code?"."""
    packages: Counter[str] = Counter()
    for stack, count in _samples(paths):
        packages[_package(stack.rsplit(";", 1)[-1])] += count
    total = sum(packages.values()) or 1
    return [(name, round(100 * n / total, 1)) for name, n in packages.most_common(limit)]


def _package(frame: str) -> str:
    location = frame.rpartition(" (")[2].rstrip(")")
    file = location.rsplit(":", 1)[0]
    head, _, rest = file.partition("/")
    if not rest:
        return f"stdlib {head}"
    if head == "queen":
        return "queen/" + rest.split("/", 1)[0]
    return head


def own_functions(
    paths: list[Path], prefix: str = "queen/", limit: int = TOP_FRAMES
) -> list[tuple[str, float]]:
    """Inclusive share of our own functions (entry points and process plumbing left out): where
    the server's own Python spends the time its framework does not."""
    skip = ("queen/__main__.py", "queen/cli.py", "queen/worker.py")
    hits: Counter[str] = Counter()
    total = 0
    for stack, count in _samples(paths):
        total += count
        seen = set()
        for frame in stack.split(";"):
            name, _, location = frame.partition(" (")
            file = location.rsplit(":", 1)[0]
            if file.startswith(prefix) and not file.startswith(skip):
                seen.add(f"{file}:{name}")
        for key in seen:
            hits[key] += count
    return [(key, round(100 * n / (total or 1), 1)) for key, n in hits.most_common(limit)]


def inclusive(paths: list[Path], needles: list[str]) -> dict[str, float]:
    """Share of samples whose stack passes through a frame containing each needle."""
    hits: Counter[str] = Counter()
    total = 0
    for stack, count in _samples(paths):
        total += count
        for needle in needles:
            if needle in stack:
                hits[needle] += count
    return {needle: round(100 * hits[needle] / (total or 1), 1) for needle in needles}
