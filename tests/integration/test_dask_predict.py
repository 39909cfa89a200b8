"""`mlcycle predict --engine dask` on a real `dask scheduler` + two `dask worker`
processes: the files' parts (byte ranges of a CSV, a JSONL file) are read, checked and
scored on the workers with the model's bundle, and the result is the local engine's,
row for row: the same output rows and probabilities, the same quarantine entries with the
files' row and line numbers."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client
from typer.testing import CliRunner

from mlcycle.cli import app
from mlcycle.config import Settings
from mlcycle.engine import LOCAL, Engine
from mlcycle.etl.partitions import plan_parts
from mlcycle.etl.pipeline import run_etl
from mlcycle.etl.sources import FileSource
from mlcycle.serve import batch_dask
from mlcycle.serve.batch import run_batch, scores_collection
from mlcycle.serve.batch_dask import read_stored
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store, quarantine_collection
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.store.mongo import MongoStore
from tests.data import embedded_settings, train_demo, write_demo
from tests.servers import DaskCluster, FerretDB

pytestmark = pytest.mark.integration

FIELDS = ("_id", "file", "row", "line", "column", "value", "reason")


@pytest.fixture(scope="module")
def project(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = embedded_settings(tmp_path_factory.mktemp("dask-predict"), reload_interval=0)
    train_demo(spec, settings, 600)
    return settings


def _source(spec: DatasetSpec, folder: Path) -> Path:
    """A folder of new rows: a CSV cut into several parts, and a JSONL file, with bad
    rows early and late in each."""
    path = Path(write_demo(spec, folder / "gen", 900, seed=31))
    csv = path if path.is_file() else next(path.glob("*.csv"))
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame = frame.drop(columns=[spec.target.column])  # type: ignore[union-attr]
    frame[spec.id_column] = [f"B{i:05d}" for i in range(len(frame))]
    for row, (column, value) in {
        3: ("ApplicantIncome", "-1"),
        420: ("Property_Area", "Moon"),
        611: ("Credit_History", "maybe"),
        871: ("LoanAmount", "lots"),
    }.items():
        frame.loc[row, column] = value
    source = folder / "new"
    source.mkdir()
    frame.iloc[:700].to_csv(source / "a.csv", index=False)
    tail = frame.iloc[700:].copy()
    tail.to_json(source / "b.jsonl", orient="records", lines=True)
    return source


def _quarantined(store: EmbeddedStore, spec: DatasetSpec, batch_id: str) -> list[tuple]:
    docs = store.find(quarantine_collection(spec.name), {"batch_id": batch_id})
    return sorted(tuple(str(d.get(k)) for k in FIELDS) for d in docs)


def test_files_scored_on_the_workers_match_the_local_engine_row_for_row(
    spec: DatasetSpec,
    project: Settings,
    cluster: DaskCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batch_dask, "PART_BYTES", 16_384)  # the CSV in several ranges
    source = _source(spec, tmp_path)
    local_store = EmbeddedStore(project.embedded_store_path)
    local = run_batch(project, spec, local_store, str(source), str(tmp_path / "local.parquet"))
    local_bad = _quarantined(local_store, spec, local.batch_id)
    local_store.close()
    store = EmbeddedStore(tmp_path / "other.sqlite3")
    try:
        with Client(cluster.address) as client:
            engine = Engine("dask", client)
            parts = plan_parts(FileSource(source), 16_384)
            assert len(parts) >= 4  # byte ranges of a.csv, and b.jsonl
            on = run_batch(project, spec, store, str(source), str(tmp_path / "dask.parquet"),
                           engine=engine, explain=True)  # fmt: skip
            on_bad = _quarantined(store, spec, on.batch_id)
            csv = run_batch(project, spec, store, str(source), str(tmp_path / "dask.csv"),
                            engine=engine)  # fmt: skip
            stored = run_batch(project, spec, store, str(source), "store", engine=engine)
            scores = store.find(scores_collection(spec.name))
        assert (on.rows, on.scored, on.rejected) == (local.rows, local.scored, local.rejected)
        assert (local.rows, local.rejected) == (900, 4) and on.labels == local.labels
        assert on.source_sha256 == local.source_sha256
        # the same rows in the same order, the same probabilities to the last bit
        mine = pd.read_parquet(tmp_path / "local.parquet")
        theirs = pd.read_parquet(tmp_path / "dask.parquet")
        pd.testing.assert_frame_equal(theirs[list(mine.columns)], mine, check_exact=True)
        assert any(c.startswith("contribution_") for c in theirs.columns)
        joined = pd.read_csv(tmp_path / "dask.csv")  # one header, the parts in order
        assert list(joined.columns) == list(mine.columns)
        assert joined[spec.id_column].tolist() == mine[spec.id_column].tolist()
        assert (joined["probability_Y"].to_numpy() == mine["probability_Y"].to_numpy()).all()
        # quarantine entries at the files' rows and lines, as the local engine puts them
        assert on_bad == local_bad
        assert [r[3] for r in local_bad] and len(local_bad) == 4
        assert csv.rejected == 4  # each rerun rewrites the same four entries
        assert len(store.find(quarantine_collection(spec.name))) == 4
        # to the store: one document per id and version, with the run's lineage
        assert stored.scored == local.scored
        assert len(scores) == local.scored
        assert {d["batch_id"] for d in scores} == {stored.batch_id}
        assert not list(tmp_path.glob(".*.parts"))  # the workers' part files are gone
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["embedded", "mongodb"])
def test_the_stored_table_scored_on_the_workers_matches_the_local_engine(
    spec: DatasetSpec,
    project: Settings,
    cluster: DaskCluster,
    ferretdb: FerretDB,
    tmp_path: Path,
    backend: str,
) -> None:
    """Each worker scores an `_id` range (read from MongoDB by the worker itself; sent
    from the embedded store): the local engine's rows, probabilities and source hash."""
    if backend == "embedded":
        store: Store = EmbeddedStore(tmp_path / "s.sqlite3")
    else:
        store = MongoStore(ferretdb.uri, f"predict{time.time_ns()}", timeout_ms=5000, retries=2)
    try:
        run_etl(spec, write_demo(spec, tmp_path / "raw", 700, seed=8), store)
        local = run_batch(project, spec, store, "store", str(tmp_path / "local.parquet"))
        with Client(cluster.address) as client:
            engine = Engine("dask", client)
            assert len(read_stored(store, spec, client)) >= 2  # a part a worker, at least
            on = run_batch(project, spec, store, "store", str(tmp_path / "dask.parquet"),
                           engine=engine)  # fmt: skip
            into = run_batch(project, spec, store, "store", "store", engine=engine)
            scores = store.find(scores_collection(spec.name))
        assert (on.rows, on.scored, on.rejected) == (local.rows, local.scored, 0)
        assert local.rows == 700 and on.labels == local.labels
        assert on.source_sha256 == local.source_sha256 == into.source_sha256
        key = spec.id_column
        mine = pd.read_parquet(tmp_path / "local.parquet").sort_values(key, ignore_index=True)
        theirs = pd.read_parquet(tmp_path / "dask.parquet").sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(theirs[list(mine.columns)], mine, check_exact=True)
        assert len(scores) == 700 and {d["batch_id"] for d in scores} == {into.batch_id}
        assert {d["source_sha256"] for d in scores} == {local.source_sha256}
    finally:
        store.close()


def test_predict_store_on_the_dask_engine_from_the_command_line(
    project: Settings, cluster: DaskCluster, tmp_path: Path
) -> None:
    env = {"MLCYCLE_DATA_DIR": str(project.data_dir), "MLFLOW_TRACKING_URI": project.tracking_uri}
    out = tmp_path / "x.parquet"
    args = ["predict", "--source", "store", "--out", str(out), "--json"]
    result = CliRunner().invoke(
        app, [*args, "--engine", "dask", "--scheduler", cluster.address], env=env
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out)) == 600 and LOCAL.distributed is False
