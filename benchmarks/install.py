"""Install benchmark: `make install` (scripts/venv.sh) from an empty package cache, with
uv (the default) and with pip alone (`MLCYCLE_INSTALLER=pip`).

    python benchmarks/install.py [--rounds 2]

Each run makes a new virtualenv in a temporary folder with fresh, empty pip and uv
caches, so every package is downloaded; the two installers take turns (the first of a
round alternates). Needs the package index; prints seconds per run, min-median-max.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXTRAS = "etl,train,serve,stream,dask,boost,dev"


def _once(installer: str) -> float:
    work = Path(tempfile.mkdtemp(prefix=f"mlcycle-install-{installer}-"))
    env = {
        **os.environ,
        "MLCYCLE_INSTALLER": installer,
        "PIP_CACHE_DIR": str(work / "pip-cache"),
        "UV_CACHE_DIR": str(work / "uv-cache"),
    }
    env.pop("PIP_NO_CACHE_DIR", None)
    started = time.perf_counter()
    try:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "venv.sh"), sys.executable, str(work / "venv"), EXTRAS],
            env=env,
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    names = ["uv", "pip"]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for i in range(args.rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            seconds[name].append(_once(name))
    print(f"`make install` into a new virtualenv, empty package caches, {args.rounds} rounds")
    print("")
    print("| installer | seconds (median) | min-max |")
    print("|---|---|---|")
    for name in names:
        s = seconds[name]
        print(f"| {name} | {statistics.median(s):.0f} | {min(s):.0f}-{max(s):.0f} |")
    print("")
    ratio = statistics.median(seconds["pip"]) / statistics.median(seconds["uv"])
    print(f"uv installs {ratio:.1f}x faster than pip alone (medians of this run)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from benchmarks.common import record

    record("install", main)
