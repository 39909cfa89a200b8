"""Shadow benchmark: the champion's throughput and p99 with a challenger scored in shadow
beside it, against the same server without one.

    python benchmarks/shadow.py           # needs wrk (Debian package `wrk`)

Trains a logistic regression (v1, the champion) and a random forest (v2, set as the
challenger with `mlcycle promote 2 --as challenger`) on the loan table
(../shared/data/loan/train.csv when present, else a synthetic one) in a temporary
embedded project, then starts two one-worker servers on 127.0.0.1, both on CPU 0 with
wrk on CPU 1: one with `MLCYCLE_SHADOW_ALIAS=` (no shadow) and one following the
challenger. Rounds of single-row requests at 16 connections take turns between them
(the first of a round alternates), so a slower spell of the machine hits both; each
cell is the median of the rounds with min-max, and the ratio is the median of the
rounds' ratios. The shadow's own predictions are counted from /metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOAN = REPO.parent / "shared" / "data" / "loan" / "train.csv"
RECORD = {
    "Loan_ID": "LP001002",
    "Gender": "Male",
    "Married": "No",
    "Dependents": "0",
    "Education": "Graduate",
    "Self_Employed": "No",
    "ApplicantIncome": 5849.0,
    "CoapplicantIncome": 0.0,
    "LoanAmount": None,
    "Loan_Amount_Term": 360.0,
    "Credit_History": 1.0,
    "Property_Area": "Urban",
}


def _project(work: Path, env: dict[str, str]) -> None:
    cli = [sys.executable, "-m", "mlcycle.cli"]
    raw = work / "raw"
    raw.mkdir()
    if LOAN.exists():
        shutil.copy(LOAN, raw / "train.csv")
    else:
        subprocess.run(
            [*cli, "demo-data", "--rows", "1000", "--out", str(raw)], env=env, check=True
        )

    def run(*args: str) -> str:
        return subprocess.run(
            [*cli, *args], env=env, check=True, capture_output=True, text=True, cwd=REPO
        ).stdout

    run("etl", "--source", str(raw))
    run("train", "--json")
    forest = work / "forest.yaml"
    forest.write_text(
        json.dumps({"model": {"kind": "random_forest", "params": {"n_estimators": 100}}})
    )
    run("train", "--config", str(forest), "--json")
    versions = json.loads(run("models", "--json"))["versions"]
    if "champion" in versions[-1]["aliases"]:
        run("rollback", "--reason", "benchmark: v1 is the champion")
    run("promote", "2", "--as", "challenger", "--json")


def _shadowed(url: str) -> float:
    with urllib.request.urlopen(url.replace("/predict", "/metrics"), timeout=10) as reply:
        text = reply.read().decode()
    found = re.findall(r"^mlcycle_shadow_predictions_total\{[^}]*\} ([\d.e+]+)$", text, re.M)
    return sum(float(x) for x in found)


def _cell(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def main() -> None:
    from benchmarks.serve import CLIENT_CPU, free_port, pinned, wait, wrk

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install wrk")
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        CLIENT_CPU[:] = ["taskset", "-c", "1"]
    work = Path(tempfile.mkdtemp(prefix="mlcycle-shadow-bench-"))
    env = {
        **os.environ,
        "MLCYCLE_DATA_DIR": str(work / "data"),
        "MLCYCLE_ACCESS_LOG": "false",
        "MLCYCLE_RELOAD_INTERVAL": "0",
        "MLCYCLE_LOG_LEVEL": "WARNING",
    }
    for key in ("MLFLOW_TRACKING_URI", "MONGO_URI", "MLCYCLE_SHADOW_ALIAS"):
        env.pop(key, None)
    _project(work, env)
    servers = {"no shadow": {**env, "MLCYCLE_SHADOW_ALIAS": ""}, "challenger in shadow": env}
    urls, procs = {}, []
    body = json.dumps(RECORD)
    try:
        for name, server_env in servers.items():
            port = free_port()
            command = [sys.executable, "-m", "mlcycle.cli", "serve", "--port", str(port)]
            procs.append(
                subprocess.Popen(
                    pinned(command, 1),
                    env=server_env,
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait(f"http://127.0.0.1:{port}/health/ready", procs[-1])
            urls[name] = f"http://127.0.0.1:{port}/predict"
            wrk(urls[name], body, 16, 2, work)  # warm up
        names = list(servers)
        rounds: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
        ratios: list[tuple[float, float]] = []
        for i in range(args.rounds):
            order = names if i % 2 == 0 else names[::-1]
            turn = {n: wrk(urls[n], body, 16, args.seconds, work) for n in order}
            for n, r in turn.items():
                rounds[n].append(r)
            base, shadow = turn[names[0]], turn[names[1]]
            ratios.append((shadow[0] / base[0], shadow[2] / base[2]))
        shadowed = _shadowed(urls[names[1]])
        served = sum(r[0] * args.seconds for r in rounds[names[1]])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)
    print(
        f"single rows, 16 connections, {args.rounds} rounds of {args.seconds} s (median, min-max)"
    )
    print("")
    print("| server | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for n in names:
        rs = rounds[n]
        print(
            f"| {n} | {_cell([r[0] for r in rs], 0)} | {_cell([r[1] for r in rs], 2)} "
            f"| {_cell([r[2] for r in rs], 2)} |"
        )
    print("")
    rps = statistics.median(r[0] for r in ratios)
    p99 = statistics.median(r[1] for r in ratios)
    print(f"with a shadow: throughput {rps:.0%} and p99 {p99:.0%} of without (median of rounds)")
    print(f"the shadow scored {shadowed:,.0f} of about {served:,.0f} answered requests")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from benchmarks.common import record

    record("shadow", main)
