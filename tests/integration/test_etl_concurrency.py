"""Runs interrupted or concurrent: one writer per dataset, and a dead run's batch is
marked failed by the next one; training never reads half a load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlcycle.datagen import write_demo
from mlcycle.errors import DatasetBusy, TrainingError
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import BATCHES, Store
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.store.lease import Lease, live_holder
from mlcycle.train.snapshot import load_snapshot
from tests.servers import wait_for

pytestmark = pytest.mark.integration


def test_a_second_run_of_the_same_dataset_stops_with_a_clear_message(
    spec: DatasetSpec, store: Store, tmp_path: Path
) -> None:
    path = write_demo(spec, tmp_path / "raw", 200, seed=4)
    with Lease(store, "loan", "other-batch", lease_seconds=60):
        with pytest.raises(DatasetBusy, match="is being loaded by batch other-batch"):
            run_etl(spec, path, store)
        assert store.count("loan") == 0
        with pytest.raises(TrainingError, match="being loaded right now"):
            load_snapshot(store, spec)
    summary = run_etl(spec, path, store)  # free again
    assert summary.inserted == 200


def test_another_dataset_is_not_blocked(spec: DatasetSpec, store: Store, tmp_path: Path) -> None:
    path = write_demo(spec, tmp_path / "raw", 50, seed=4)
    with Lease(store, "credit", "other-batch", lease_seconds=60):
        assert run_etl(spec, path, store).inserted == 50


def test_a_run_waits_for_the_lease_when_asked(spec: DatasetSpec, tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    path = write_demo(spec, tmp_path / "raw", 50, seed=4)
    lease = Lease(store, "loan", "short", lease_seconds=1.5)
    lease.__enter__()
    lease._stop.set()  # it stops renewing, as a dead process would
    started = time.monotonic()
    summary = run_etl(spec, path, store, lock_wait=10)
    assert summary.inserted == 50
    assert time.monotonic() - started > 0.5  # it waited (lock_wait bounds it: DatasetBusy)


def _etl(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlcycle.cli", "etl", "--json"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_killed_etl_is_marked_failed_by_the_next_run_which_completes_the_load(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    rows = 150_000
    write_demo(spec, tmp_path / "raw", rows, seed=8)
    data = tmp_path / "data"
    env = {
        "MLCYCLE_DATA_DIR": str(data),
        "MLCYCLE_RAW_DIR": str(tmp_path / "raw"),
        "MLCYCLE_LOCK_LEASE": "2",
        "MLCYCLE_CHUNK_ROWS": "5000",
    }
    proc = _etl(env)
    store = EmbeddedStore(data / "store.sqlite3")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (data / "store.sqlite3").exists() and store.count("loan") > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the ETL finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = store.count("loan")
    assert 0 < partial < rows
    (dead,) = store.find(BATCHES)
    assert dead["status"] == "running"
    with pytest.raises(TrainingError, match="being loaded right now"):
        load_snapshot(store, spec)

    wait_for(lambda: live_holder(store, "loan") is None, 30, "the dead run's lease to run out")
    rerun = _etl(env)
    _out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    batches = {b["_id"]: b for b in store.find(BATCHES)}
    assert batches[dead["_id"]]["status"] == "failed"
    assert "abandoned" in batches[dead["_id"]]["error"]
    assert batches[dead["_id"]]["rows_written"] == partial
    assert store.count("loan") == rows
    snapshot = load_snapshot(store, spec)
    assert snapshot.batch_statuses[dead["_id"]] == "failed"
    assert "succeeded" in snapshot.batch_statuses.values()
    store.close()
