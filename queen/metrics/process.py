"""What the operating system says about this worker process: CPU time and memory."""

from __future__ import annotations

import resource
from dataclasses import dataclass

_PAGE = resource.getpagesize()


@dataclass(frozen=True)
class ProcessSample:
    cpu_user_s: float
    cpu_system_s: float
    resident_bytes: int
    virtual_bytes: int


def sample() -> ProcessSample:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/statm") as statm:
            size, resident = (int(field) for field in statm.read().split()[:2])
        virtual_bytes, resident_bytes = size * _PAGE, resident * _PAGE
    except (OSError, ValueError):  # no /proc: the peak is the best the kernel tells
        virtual_bytes, resident_bytes = 0, usage.ru_maxrss * 1024
    return ProcessSample(usage.ru_utime, usage.ru_stime, resident_bytes, virtual_bytes)
