"""The dask engine on a real cluster: a `dask scheduler` and two `dask worker` processes
started with Dask's own CLI on 127.0.0.1, against the embedded store and FerretDB."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from distributed import Client

from mlcycle.config import get_settings
from mlcycle.datagen import write_demo
from mlcycle.engine import LOCAL, Engine
from mlcycle.etl.distributed import run_etl_dask
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store, quarantine_collection
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.store.mongo import MongoStore
from mlcycle.train.config import load_train_config
from mlcycle.train.train import run_train
from tests.data import CONFIG_PATH, embedded_settings
from tests.integration.test_etl_pipeline import HEADER
from tests.servers import DaskCluster, FerretDB, mlcycle, worker_env

pytestmark = pytest.mark.integration


def messy_files(spec: DatasetSpec, folder: Path) -> Path:
    """Two files, the first cut into many parts: quoted fields with commas and line
    breaks, blank lines, bad rows, and ids repeated within a part, across parts and
    across files."""
    folder.mkdir(parents=True, exist_ok=True)
    big = write_demo(spec, folder / "a.csv", 6_000, seed=21)
    lines = big.read_text().splitlines()
    body = lines[1:]
    body.insert(100, '"LP-Q1",Male,Yes,0,"Not Graduate",No,"4,000",0,100,360,1,Urban,Y')
    body.insert(2_000, '"LP-Q2","Ma\nle",Yes,0,Graduate,No,4000,0,100,360,1,Urban,Y')
    body.insert(3_000, "")
    body.insert(3_500, body[10])  # a duplicate far from its first occurrence
    body.insert(3_501, body[3_400])  # and one in the same part
    body.append("LP-BAD,Robot,Yes,0,Graduate,No,-5,0,100,360,1,Urban,Y")
    big.write_text("\n".join([HEADER, *body]) + "\n")
    small = write_demo(spec, folder / "b.csv", 500, seed=22)
    extra = small.read_text().splitlines()
    extra.append(body[20])  # an id of the first file
    small.write_text("\n".join(extra) + "\n")
    # JSONL: a row's line is its row (no header line), on both engines
    records = pd.read_csv(write_demo(spec, folder / "gen" / "c.csv", 300, seed=23), dtype=str)
    records[spec.id_column] = [f"J{i:04d}" for i in range(len(records))]
    records.loc[250, "ApplicantIncome"] = "-7"
    records.to_json(folder / "c.jsonl", orient="records", lines=True)
    (folder / "gen" / "c.csv").unlink()
    (folder / "gen").rmdir()
    return folder


def everything(store: Store, dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = {d["_id"]: {k: v for k, v in d.items() if k != "_batch_id"} for d in store.find(dataset)}
    quarantine = {
        q["_id"]: {k: v for k, v in q.items() if k not in ("batch_id", "quarantined_at")}
        for q in store.find(quarantine_collection(dataset))
    }
    return rows, quarantine


@pytest.mark.parametrize("backend", ["embedded", "mongodb"])
def test_dask_etl_stores_what_the_local_engine_stores(
    spec: DatasetSpec, cluster: DaskCluster, ferretdb: FerretDB, tmp_path: Path, backend: str
) -> None:
    raw = messy_files(spec, tmp_path / "raw")
    local = EmbeddedStore(tmp_path / "local.sqlite3")
    reference = run_etl(spec, raw, local, max_rejected_share=0.5)
    if backend == "embedded":
        store: Store = EmbeddedStore(tmp_path / "dask.sqlite3")
        db = None
    else:
        store = MongoStore(ferretdb.uri, f"dask{time.time_ns()}", timeout_ms=5000, retries=2)
        db = store.db.name  # type: ignore[attr-defined]
    with Client(cluster.address) as client:
        summary = run_etl_dask(
            spec, raw, store, client, mongo_db=db, part_bytes=64 * 1024, max_rejected_share=0.5
        )
        assert summary.status == "succeeded"
        for key in ("rows_read", "valid", "rejected", "dropped", "inserted", "quarantined"):
            assert getattr(summary, key) == getattr(reference, key), key
        assert [(f.rows, f.valid, f.rejected) for f in summary.files] == [
            (f.rows, f.valid, f.rejected) for f in reference.files
        ]
        assert everything(store, spec.name) == everything(local, spec.name)
        reasons = [q["reason"] for q in store.find(quarantine_collection(spec.name))]
        assert sum("duplicate id: first seen at" in r for r in reasons) == 3
        assert any("a.csv row" in r for r in reasons)  # found across files

        again = run_etl_dask(spec, raw, store, client, mongo_db=db, part_bytes=64 * 1024,
                             max_rejected_share=0.5)  # fmt: skip
        assert (again.inserted, again.updated) == (0, 0)
        assert everything(store, spec.name) == everything(local, spec.name)
    store.close()


def test_cli_etl_and_train_on_the_dask_engine(
    spec: DatasetSpec, cluster: DaskCluster, tmp_path: Path
) -> None:
    write_demo(spec, tmp_path / "data" / "raw" / "loans.csv", 3_000, seed=8)
    env = {**worker_env(tmp_path, None), "MLCYCLE_TRAIN_CONFIG": str(CONFIG_PATH)}
    for var in ("MLFLOW_TRACKING_URI",):
        env.pop(var, None)
    etl = mlcycle(env, tmp_path, "etl", "--engine", "dask", "--scheduler", cluster.address,
                  "--json")  # fmt: skip
    assert etl.returncode == 0, etl.stderr
    assert orjson.loads(etl.stdout)["inserted"] == 3_000
    train = mlcycle(env, tmp_path, "train", "--engine", "dask", "--scheduler", cluster.address,
                    "--json")  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert orjson.loads(train.stdout)["rows"] > 1_000
    bad = mlcycle(env, tmp_path, "etl", "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert bad.returncode == 1 and "cannot reach the Dask scheduler" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_training_on_dask_gives_the_local_metrics(
    spec: DatasetSpec, cluster: DaskCluster, ferretdb: FerretDB, tmp_path: Path
) -> None:
    store = MongoStore(ferretdb.uri, f"train{time.time_ns()}", timeout_ms=5000, retries=2)
    run_etl(spec, write_demo(spec, tmp_path / "raw", 4_000, seed=9), store)
    cfg = load_train_config(CONFIG_PATH)
    local = run_train(embedded_settings(tmp_path / "a"), spec, cfg, store, LOCAL)
    with Client(cluster.address) as client:
        remote = run_train(
            embedded_settings(tmp_path / "b"), spec, cfg, store, Engine("dask", client)
        )
    assert remote.rows == local.rows and remote.data_hash == local.data_hash
    assert remote.metrics == local.metrics
    assert remote.cv == local.cv
    store.close()


def test_a_worker_killed_mid_load_loses_and_duplicates_nothing(
    spec: DatasetSpec, ferretdb: FerretDB, tmp_path: Path
) -> None:
    own = DaskCluster(tmp_path / "dask", worker_env(tmp_path, ferretdb.uri)).start()
    try:
        # FerretDB takes a few hundred upserts a second here: 20,000 rows in 16 parts
        raw = write_demo(spec, tmp_path / "raw" / "big.csv", 20_000, seed=31)
        store = MongoStore(ferretdb.uri, f"kill{time.time_ns()}", timeout_ms=5000, retries=2)
        result: dict[str, Any] = {}
        with Client(own.address) as client:
            runner = threading.Thread(
                target=lambda: result.update(
                    s=run_etl_dask(
                        spec, raw, store, client, mongo_db=store.db.name, part_bytes=96 * 1024
                    )
                )
            )
            runner.start()
            deadline = time.monotonic() + 120
            while store.count(spec.name) < 2_000 and time.monotonic() < deadline:
                time.sleep(0.1)
            victim = own.workers[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            runner.join(600)
        assert not runner.is_alive(), "the run did not finish after the worker was killed"
        assert result["s"].status == "succeeded"
        local = EmbeddedStore(tmp_path / "local.sqlite3")
        run_etl(spec, raw, local)
        assert store.count(spec.name) == 20_000
        assert everything(store, spec.name) == everything(local, spec.name)
        store.close()
    finally:
        own.stop()
    assert get_settings() is not None


@pytest.mark.parametrize("backend", ["embedded", "mongodb"])
def test_dask_keeps_labels_as_the_local_engine_does(
    spec: DatasetSpec, cluster: DaskCluster, ferretdb: FerretDB, tmp_path: Path, backend: str
) -> None:
    """An unlabelled copy of the labelled rows, cut into several parts, in the same run:
    the rows complete one another on the workers exactly as they do locally."""
    raw = tmp_path / "raw"
    write_demo(spec, raw / "train.csv", 3_000, seed=41)
    labelled = pd.read_csv(raw / "train.csv", dtype=str, keep_default_na=False)
    labelled.drop(columns=[spec.target.column]).to_csv(raw / "test.csv", index=False)
    local = EmbeddedStore(tmp_path / "local.sqlite3")
    run_etl(spec, raw, local)
    if backend == "embedded":
        store: Store = EmbeddedStore(tmp_path / "dask.sqlite3")
        db = None
    else:
        store = MongoStore(ferretdb.uri, f"labels{time.time_ns()}", timeout_ms=5000, retries=2)
        db = store.db.name  # type: ignore[attr-defined]
    with Client(cluster.address) as client:
        summary = run_etl_dask(spec, raw, store, client, mongo_db=db, part_bytes=32 * 1024)
    assert summary.status == "succeeded" and summary.rejected == 0
    labels = {d["_id"]: d.get(spec.target.column) for d in store.find(spec.name)}
    assert labels == dict(zip(labelled[spec.id_column], labelled[spec.target.column], strict=True))
    assert everything(store, spec.name) == everything(local, spec.name)
    store.close()


def test_workers_read_the_file_the_client_names_not_their_own(
    spec: DatasetSpec, cluster: DaskCluster, tmp_path: Path
) -> None:
    """A relative raw folder names the client's file: a worker whose own folder holds a
    file at the same relative path reads the client's (absolute) path."""
    write_demo(spec, tmp_path / "data" / "raw" / "loans.csv", 1_000, seed=8)
    write_demo(spec, cluster.workdir / "data" / "raw" / "loans.csv", 50, seed=9)  # a decoy
    env = {**worker_env(tmp_path, None), "MLCYCLE_RAW_DIR": "data/raw"}
    etl = mlcycle(env, tmp_path, "etl", "--engine", "dask", "--scheduler", cluster.address,
                  "--json")  # fmt: skip
    assert etl.returncode == 0, etl.stderr
    out = orjson.loads(etl.stdout)
    assert out["inserted"] == 1_000
    assert out["files"][0]["path"] == str(tmp_path / "data" / "raw" / "loans.csv")


def test_a_worker_that_sees_other_bytes_fails_the_part(spec: DatasetSpec, tmp_path: Path) -> None:
    from mlcycle.errors import SourceChanged
    from mlcycle.etl.distributed import check_part
    from mlcycle.etl.partitions import plan_parts
    from mlcycle.etl.sources import FileSource

    path = write_demo(spec, tmp_path / "raw" / "loans.csv", 2_000, seed=3)
    parts = plan_parts(FileSource(path), 16 * 1024)
    assert len(parts) > 2 and all(p.span for p in parts)
    text = path.read_text()
    path.write_text(text.replace("Male", "Mal_", 1).replace("Female", "Femal", 1))
    with pytest.raises(SourceChanged, match=r"loans\.csv: the file changed.*Dask workers must see"):
        check_part(parts[0], spec, 500)
    path.unlink()
    with pytest.raises(Exception, match=r"no such file on the Dask worker"):
        check_part(parts[1], spec, 500)
