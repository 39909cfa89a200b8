"""Helpers shared by the benchmarks: peak memory, and the record every run leaves.

A benchmark's `__main__` is `record("<name>", main)`: what it prints goes to the terminal
as before and, parsed into paragraphs and Markdown tables, into
`benchmarks/results/<name>.json` with the command, the time and the machine.
`python benchmarks/render.py` turns those files into `docs/benchmarks.md`: no figure in
the docs is typed by hand.
"""

from __future__ import annotations

import io
import json
import os
import platform
import resource
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def peak_mb() -> float:
    """This process's peak RSS in MB. VmHWM, not ru_maxrss: a child started with
    fork + exec inherits its parent's ru_maxrss, so a benchmark's big parent would
    inflate every child's figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Tee(io.TextIOBase):
    def __init__(self, out: Any) -> None:
        self.out = out
        self.seen = io.StringIO()

    def write(self, text: str) -> int:
        self.out.write(text)
        self.out.flush()
        return self.seen.write(text)


def machine() -> dict[str, Any]:
    memory = 0.0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) / 1024 / 1024
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "system": platform.platform(terse=True),
    }


def blocks(text: str) -> list[dict[str, Any]]:
    """Printed output as paragraphs (`text`) and Markdown tables (`columns`, `rows`)."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            out.append({"text": ""})
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            last = out[-1] if out else None
            if last is not None and "columns" in last:
                if not all(set(c) <= set("-: ") for c in cells):
                    last["rows"].append(cells)
                continue
            out.append({"columns": cells, "rows": []})
            continue
        if out and "text" in out[-1] and out[-1]["text"]:
            out[-1]["text"] += "\n" + line
        else:
            out.append({"text": line})
    return [b for b in out if b.get("text", True)]


def run_child(script: str, *args: str) -> dict[str, Any]:
    """Run `script --child ARGS` in a fresh Python process and return the JSON its last
    line printed (a measurement with its own peak memory)."""
    import subprocess

    out = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def record(name: str, main: Callable[[], None]) -> None:
    """Run a benchmark's `main`, then save what it printed as results/<name>.json (a
    `--child` process, which prints for its parent, saves nothing)."""
    if "--child" in sys.argv:
        main()
        return
    tee = _Tee(sys.stdout)
    started = datetime.now(UTC)
    with redirect_stdout(tee):  # type: ignore[type-var]
        main()
    RESULTS.mkdir(exist_ok=True)
    result = {
        "benchmark": name,
        "command": " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "machine": machine(),
        "output": blocks(tee.seen.getvalue()),
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"saved {path.relative_to(RESULTS.parent.parent)}", file=sys.stderr)
