"""Serving benchmark: our API vs `mlflow models serve` on the same registered model.

    python benchmarks/serve.py            # needs wrk (Debian package `wrk`)

Trains and registers a model on the loan table (../shared/data/loan/train.csv when
present, else a synthetic one) in a temporary embedded MLflow store, then starts, one at
a time on 127.0.0.1: mlcycle with 1 worker and with 2 (workers = cores), the bare
FastAPI + numpy reference (benchmarks/bare_app.py) and `mlflow models serve`; prints
req/s, p50 and p99 for single rows at 16 and 64 connections (wrk, 10 s each), then the
time for batches of 1,000 and 10,000 rows (records, and the columnar form). One worker
and the bare scorer are first measured in rounds taking turns at 16 connections (both
up, one loaded at a time): their c16 cells are the medians, and the ratio is the median
of the rounds' ratios. One-worker servers run on CPU 0, wrk and the batch client on
CPU 1 (`--pin`, with taskset and sched_setaffinity), so the client never shares a core
with a server's threads; two workers are not pinned.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
LOAN = REPO.parent / "shared" / "data" / "loan" / "train.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({url})")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"not ready: {url}")


CLIENT_CPU: list[str] = []
"""`taskset -c 1` when one-worker servers are pinned to CPU 0 (`--pin`): the load
generator then never shares a core with the server's threads (two workers: not pinned)."""


def pinned(command: list[str], workers: int) -> list[str]:
    """A one-worker server on CPU 0, its threads included (the prediction log's writer
    would otherwise run beside wrk and slow the client); more workers are not pinned."""
    return ["taskset", "-c", "0", *command] if CLIENT_CPU and workers == 1 else command


def wrk(
    url: str, body: str, connections: int, seconds: int, workdir: Path, pin: bool = True
) -> tuple[float, float, float]:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    out = subprocess.run(
        [
            *(CLIENT_CPU if pin else []),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx responses from {url}:\n{out}")
    return rps, pct("50"), pct("99")


def batch_ms(url: str, payload: dict, pin: bool = False, repeats: int = 7) -> float:
    """Median time of `repeats` POSTs of `payload`, one after the other. `pin`: the
    client runs on CPU 1 meanwhile (the one-worker servers are on CPU 0), as wrk does."""
    body = json.dumps(payload).encode()
    times = []
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if pin and CLIENT_CPU and cpus is not None:
        os.sched_setaffinity(0, {1})
    try:
        with httpx.Client(timeout=60) as client:
            for _ in range(repeats):
                t = time.perf_counter()
                r = client.post(url, content=body, headers={"Content-Type": "application/json"})
                times.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
    finally:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
    return statistics.median(times)


def columnar(rows: list[dict]) -> dict:
    return {"columns": {k: [r.get(k) for r in rows] for k in rows[0]}}


def dataframe_split(rows: list[dict]) -> dict:
    return {"dataframe_split": {"columns": list(rows[0]), "data": [list(r.values()) for r in rows]}}


PAIRED = ("mlcycle (1 worker)", "bare FastAPI + numpy scorer (1 worker)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--prediction-log", choices=["true", "false"], default="true")
    parser.add_argument(
        "--pin",
        choices=["true", "false"],
        default="true",
        help="one-worker servers on CPU 0 and wrk on CPU 1 (taskset), two workers unpinned",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="rounds at 16 connections taking turns between 1 worker and the bare scorer",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated words: run only the servers whose name holds one (e.g. 1 worker)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install wrk")
    if args.pin == "true" and shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        CLIENT_CPU[:] = ["taskset", "-c", "1"]
    work = Path(tempfile.mkdtemp(prefix="mlcycle-serve-bench-"))
    env = {
        **os.environ,
        "MLCYCLE_DATA_DIR": str(work / "data"),
        "MLCYCLE_ACCESS_LOG": "false",
        "MLCYCLE_RELOAD_INTERVAL": "0",
        "MLCYCLE_LOG_LEVEL": "WARNING",
        "MLCYCLE_PREDICTION_LOG": args.prediction_log,
        # `mlflow models serve` starts `uvicorn` by name: the virtualenv's bin first
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MONGO_URI", None)
    cli = [sys.executable, "-m", "mlcycle.cli"]
    raw = work / "raw"
    raw.mkdir()
    if LOAN.exists():
        shutil.copy(LOAN, raw / "train.csv")
    else:
        subprocess.run(
            [*cli, "demo-data", "--rows", "1000", "--out", str(raw)], env=env, check=True, cwd=REPO
        )
    subprocess.run(
        [*cli, "etl", "--source", str(raw)], env=env, check=True, cwd=REPO, capture_output=True
    )
    subprocess.run([*cli, "train", "--json"], env=env, check=True, cwd=REPO, capture_output=True)

    import pandas as pd

    sys.path.insert(0, str(REPO / "src"))
    frame = pd.read_csv(raw / next(p.name for p in raw.iterdir()))
    numeric = [
        "ApplicantIncome",
        "CoapplicantIncome",
        "LoanAmount",
        "Loan_Amount_Term",
        "Credit_History",
    ]
    records = []
    for rec in frame.drop(columns=["Loan_Status"], errors="ignore").to_dict("records"):
        records.append(
            {
                k: (None if pd.isna(v) else (float(v) if k in numeric else str(v)))
                for k, v in rec.items()
            }
        )
    one = records[0]
    rows_1k = (records * 20)[:1000]
    rows_10k = (records * 20)[:10000]

    tracking = f"sqlite:///{(work / 'data' / 'mlflow.db').resolve()}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    servers: list[tuple[str, list[str], dict[str, str], Path, str, str]] = []
    for workers in (1, 2):
        port = free_port()
        servers.append(
            (
                f"mlcycle ({workers} worker{'s' if workers > 1 else ''})",
                pinned([*cli, "serve", "--port", str(port), "--workers", str(workers)], workers),
                env,
                REPO,
                f"http://127.0.0.1:{port}/predict",
                f"http://127.0.0.1:{port}/health/ready",
            )
        )
    port = free_port()
    bare = [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.bare_app:create"]
    servers.append(
        (
            "bare FastAPI + numpy scorer (1 worker)",
            pinned(
                [
                    *bare,
                    "--port",
                    str(port),
                    "--loop",
                    "uvloop",
                    "--http",
                    "h11",
                    "--no-access-log",
                ],
                1,
            ),
            env,
            REPO,
            f"http://127.0.0.1:{port}/predict",
            f"http://127.0.0.1:{port}/docs",
        )
    )
    port = free_port()
    servers.append(
        (
            "mlflow models serve (1 worker)",
            pinned(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "models",
                    "serve",
                    "-m",
                    "models:/loan-approval/1",
                    "-p",
                    str(port),
                    "-h",
                    "127.0.0.1",
                    "--env-manager",
                    "local",
                    "-w",
                    "1",
                ],
                1,
            ),
            {**env, "MLFLOW_TRACKING_URI": tracking},
            work,
            f"http://127.0.0.1:{port}/invocations",
            f"http://127.0.0.1:{port}/ping",
        )
    )
    lines = [
        "| server | c16 req/s | c16 p50 | c16 p99 | c64 req/s | c64 p50 | c64 p99 | 1,000 rows | 10,000 rows |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    extra: list[str] = []
    results: dict[str, tuple[float, float, float]] = {}
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    if wanted:
        servers = [s for s in servers if any(w in s[0] for w in wanted)]
    # One worker against the bare scorer: both up, rounds at 16 connections taking turns
    # (the first of a round alternates), so a slower spell of the machine hits both.
    chosen = {s[0]: s for s in servers}
    paired: dict[str, list[tuple[float, float, float]]] = {}
    ratios: list[float] = []
    if all(n in chosen for n in PAIRED) and args.pairs > 0:
        procs = []
        try:
            for n in PAIRED:
                _, command, server_env, cwd, url, ready = chosen[n]
                procs.append(subprocess.Popen(command, env=server_env, cwd=cwd, **quiet))  # type: ignore[call-overload]
                wait(ready, procs[-1])
                wrk(url, json.dumps(one), 16, 2, work)  # warm up
            for i in range(args.pairs):
                order = PAIRED if i % 2 == 0 else PAIRED[::-1]
                turn = {
                    n: wrk(chosen[n][4], json.dumps(one), 16, args.seconds, work) for n in order
                }
                for n, r in turn.items():
                    paired.setdefault(n, []).append(r)
                ratios.append(turn[PAIRED[0]][0] / turn[PAIRED[1]][0])
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(15)
    for name, command, server_env, cwd, url, ready in servers:  # one at a time: 2 cores
        proc = subprocess.Popen(command, env=server_env, cwd=cwd, **quiet)  # type: ignore[call-overload]
        try:
            wait(ready, proc)
            mlflow = "mlflow" in name
            single = {"dataframe_records": [one]} if mlflow else one
            pin = "(1 worker)" in name  # two workers have both cores, the client its share
            wrk(url, json.dumps(single), 16, 2, work, pin)  # warm up
            if name in paired:  # the median of its rounds against the bare scorer
                rounds = paired[name]
                r16 = (
                    statistics.median(r[0] for r in rounds),
                    statistics.median(r[1] for r in rounds),
                    statistics.median(r[2] for r in rounds),
                )
            else:
                r16 = wrk(url, json.dumps(single), 16, args.seconds, work, pin)
            r64 = wrk(url, json.dumps(single), 64, args.seconds, work, pin)
            results[name] = r16
            if "bare" in name:  # single records only
                b1 = b10 = "-"
            else:
                batch = (
                    (lambda rows: {"dataframe_records": rows})
                    if mlflow
                    else (lambda rows: {"records": rows})
                )
                b1 = f"{batch_ms(url, batch(rows_1k), pin):.1f} ms"
                b10 = f"{batch_ms(url, batch(rows_10k), pin):.1f} ms"
                shape, label = (
                    (dataframe_split, "dataframe_split") if mlflow else (columnar, "columnar")
                )
                extra.append(
                    f"| {name}, {label} body | | | | | | | "
                    f"{batch_ms(url, shape(rows_1k), pin):.1f} ms "
                    f"| {batch_ms(url, shape(rows_10k), pin):.1f} ms |"
                )
            lines.append(
                f"| {name} | {r16[0]:,.0f} | {r16[1]:.1f} ms | {r16[2]:.1f} ms | {r64[0]:,.0f} | "
                f"{r64[1]:.1f} ms | {r64[2]:.1f} ms | {b1} | {b10} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)  # progress; the table follows
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    print()
    print("\n".join(lines + extra))
    ours = results.get("mlcycle (1 worker)", (0.0,))[0]
    bare_rps = results.get("bare FastAPI + numpy scorer (1 worker)", (0.0,))[0]
    mlflow_rps = results.get("mlflow models serve (1 worker)", (0.0,))[0]
    if ratios:
        turns = ", ".join(f"{r:.0%}" for r in ratios)
        print(
            f"\nsingle-row throughput at 16 connections, 1 worker: "
            f"{statistics.median(ratios):.0%} of the bare scorer (median of rounds {turns})"
        )
    elif ours and bare_rps:
        print(
            f"\nsingle-row throughput at 16 connections, 1 worker: {ours / bare_rps:.0%} of the bare scorer"
        )
    if ours and mlflow_rps:
        print(f"... and {ours / mlflow_rps:.0f}x mlflow models serve")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from benchmarks.common import record

    record("serve", main)
