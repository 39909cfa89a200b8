"""A MongoDB server that goes away mid-load: bounded retries, a clear error, and a rerun
that converges to the full data set with no duplicate and no lost row."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlcycle.datagen import write_demo
from mlcycle.errors import StoreUnavailable
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.mongo import MongoStore
from tests.servers import FerretDB, start_ferretdb

pytestmark = pytest.mark.integration


def test_store_down_gives_bounded_retries_and_a_redacted_error() -> None:
    store = MongoStore("mongodb://alice:s3cret@127.0.0.1:9/", "x", timeout_ms=200, retries=2)
    with pytest.raises(StoreUnavailable, match="unreachable") as info:
        store.ping()
    assert "s3cret" not in str(info.value)
    assert "alice:***@" in str(info.value)


def test_stopping_ferretdb_mid_load_then_rerunning_converges(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    server = start_ferretdb(tmp_path / "fdb")
    source = write_demo(spec, tmp_path / "raw", rows=6000, seed=11)
    store = MongoStore(server.uri, "resilience", timeout_ms=500, retries=2)
    killed = []

    def stop_after_first_chunk(phase: str, done: int, total: int | None) -> None:
        if phase == "load" and done >= 1000 and not killed:
            server.stop()
            killed.append(done)

    try:
        with pytest.raises(StoreUnavailable):
            run_etl(spec, source, store, chunk_rows=1000, progress=stop_after_first_chunk)
        assert killed == [1000]

        server.start()  # same data folder: what was written before the stop is still there
        partial = store.count("loan")
        assert 0 < partial < 6000
        rerun = run_etl(spec, source, store, chunk_rows=1000)
        assert rerun.status == "succeeded"
        assert rerun.inserted == 6000 - partial
        assert rerun.unchanged == partial
        snap = store.read_snapshot("loan", columns=["_id", "_hash"])
        assert len(snap) == 6000
        assert snap["_id"].is_unique
        final = run_etl(spec, source, store, chunk_rows=1000)
        assert (final.inserted, final.updated, final.unchanged) == (0, 0, 6000)
    finally:
        store.close()
        server.stop()


def test_bad_credentials_are_one_clear_line_and_exit_2(ferretdb: FerretDB, tmp_path: Path) -> None:
    """A real server refusing the credentials: no traceback, no retry loop, the password
    never printed."""
    import os
    import subprocess
    import sys

    uri = ferretdb.uri.replace("mongodb://", "mongodb://someone:wrong-secret@")
    env = {
        **os.environ,
        "MONGO_URI": uri,
        "MLCYCLE_DATA_DIR": str(tmp_path / "data"),
    }
    made = subprocess.run(
        [sys.executable, "-m", "mlcycle.cli", "demo-data", "--rows", "20"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    out = subprocess.run(
        [sys.executable, "-m", "mlcycle.cli", "etl"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "refused the credentials" in out.stderr
    assert "wrong-secret" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr and "retrying" not in out.stderr


@pytest.mark.slow
def test_a_rerun_that_changes_10000_rows_on_ferretdb_completes(
    spec: DatasetSpec, ferretdb: FerretDB, tmp_path: Path
) -> None:
    """FerretDB freezes on a bulk write of >~100 matched updates: the store sends it small
    update batches, so a rerun that changes every row completes (and the server answers)."""
    import uuid

    from mlcycle.datagen import generate

    store = MongoStore(ferretdb.uri, f"upd{uuid.uuid4().hex[:8]}", timeout_ms=3000, retries=2)
    assert store.update_chunk() <= 50
    frame = generate(spec, 10_000, seed=21)
    raw = tmp_path / "raw"
    raw.mkdir()
    frame.to_csv(raw / "a.csv", index=False)
    assert run_etl(spec, raw, store).inserted == 10_000
    frame["ApplicantIncome"] = frame["ApplicantIncome"] + 1  # every row changes
    frame.to_csv(raw / "a.csv", index=False)
    fresh = MongoStore(ferretdb.uri, store._database, timeout_ms=3000, retries=2)
    summary = run_etl(spec, raw, fresh)
    assert (summary.inserted, summary.updated) == (0, 10_000)
    fresh.ping()
    assert fresh.count("loan") == 10_000
    fresh.close()
    store.close()
