"""Helpers shared by the benchmarks."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_mb() -> float:
    """This process's peak RSS in MB. VmHWM, not ru_maxrss: a child started with
    fork + exec inherits its parent's ru_maxrss, so a benchmark's big parent would
    inflate every child's figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
