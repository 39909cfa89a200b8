"""Model kind `lightgbm` on the dask engine: LightGBM's own Dask interface trains on a real
`dask scheduler` + two `dask worker` processes from partitions the workers hold (read
by them from FerretDB, or sent from the embedded store); the client receives the
hold-out and a bounded sample, never the training part; the lineage (rows, data hash)
is the local read's, and the model is exported to ONNX with parity and registered."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from distributed import Client
from mlflow.tracking import MlflowClient

from mlcycle import registry
from mlcycle.datagen import write_demo
from mlcycle.engine import LOCAL, Engine
from mlcycle.errors import TrainingError
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.store.mongo import MongoStore
from mlcycle.train import cluster as cluster_training
from mlcycle.train.config import ModelConfig, SearchConfig, TrainConfig, load_train_config
from mlcycle.train.holdout import id_positions
from mlcycle.train.snapshot import Snapshot, load_snapshot
from mlcycle.train.train import run_train
from tests.data import CONFIG_PATH, embedded_settings
from tests.servers import DaskCluster, FerretDB

pytestmark = pytest.mark.integration

ROWS = 6_000
SAMPLE = 500


def _config() -> TrainConfig:
    cfg = load_train_config(CONFIG_PATH)
    model = ModelConfig.model_validate(
        {"kind": "lightgbm", "params": {"n_estimators": 40, "num_leaves": 15}}
    )
    return cfg.model_copy(update={"model": model})


def _store(backend: str, ferretdb: FerretDB, tmp_path: Path) -> Store:
    if backend == "embedded":
        return EmbeddedStore(tmp_path / "store.sqlite3")
    return MongoStore(ferretdb.uri, f"boost{time.time_ns()}", timeout_ms=5000, retries=2)


def _client_share(
    engine: Engine, spec: DatasetSpec, cfg: TrainConfig, store: Store
) -> tuple[Snapshot, TrainConfig]:
    """What a cluster fit brings the client, and the config it splits at."""
    job = cluster_training.ClusterTraining(engine, spec, cfg)
    try:
        return job.open(store), job.cfg
    finally:
        job.close()


@pytest.mark.parametrize("backend", ["mongodb", "embedded"])
def test_lightgbm_trains_on_the_workers_and_the_client_gets_only_its_share(
    spec: DatasetSpec,
    cluster: DaskCluster,
    ferretdb: FerretDB,
    tmp_path: Path,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cluster_training, "SAMPLE_ROWS", SAMPLE)
    store = _store(backend, ferretdb, tmp_path)
    run_etl(spec, write_demo(spec, tmp_path / "raw", ROWS, seed=12), store)
    cfg = _config()
    everything = load_snapshot(store, spec)
    with Client(cluster.address) as client:
        engine = Engine("dask", client)
        share, _ = _client_share(engine, spec, cfg, store)
        settings = embedded_settings(tmp_path / "project")
        result = run_train(settings, spec, cfg, store, engine)
    # the client's share: every hold-out row, and a sample of the training part
    held = id_positions(everything.ids) < cfg.test_size
    assert share.rows == everything.rows and share.data_hash == everything.data_hash
    assert share.batch_ids == everything.batch_ids
    mine = set(share.ids)
    assert {i for i, h in zip(everything.ids, held, strict=True) if h} <= mine
    sampled = len(mine) - int(held.sum())
    train_rows = int((~held).sum())
    assert 0 < sampled < train_rows / 4 and abs(sampled - SAMPLE) < 150
    assert np.array_equal(share.label_counts(2), np.bincount(everything.y, minlength=2))
    # the model: fitted there, judged on the whole hold-out, exported with parity
    assert result.fitted_on and result.fitted_on.startswith("lightgbm.dask on 2 workers")
    assert result.rows == everything.rows and result.data_hash == everything.data_hash
    assert result.cv == {}
    assert result.evaluation and result.evaluation["set"]["rows"] == int(held.sum())
    assert result.metrics["roc_auc"] > result.baseline["roc_auc"] + 0.1
    assert result.decision["promote"] and result.champion_after == result.version
    client_ = MlflowClient(tracking_uri=settings.tracking_uri)
    tags = client_.get_model_version(spec.registered_model, str(result.version)).tags
    assert tags[registry.RUNTIME_TAG] == "onnx"
    assert tags[registry.TAG + "row_count"] == str(everything.rows)
    # the same config trained here lands near it (another partitioning, not the same trees)
    local = run_train(embedded_settings(tmp_path / "local"), spec, cfg, store, LOCAL)
    assert local.fitted_on is None and local.cv
    assert abs(local.metrics["roc_auc"] - result.metrics["roc_auc"]) < 0.05
    store.close()


def test_an_empty_store_and_a_grid_search_are_refused_on_the_cluster_saying_why(
    spec: DatasetSpec, cluster: DaskCluster, tmp_path: Path
) -> None:
    cfg = _config().model_copy(update={"search": SearchConfig(grid={"num_leaves": [7, 15]})})
    store = EmbeddedStore(tmp_path / "store.sqlite3")
    with Client(cluster.address) as client:
        engine = Engine("dask", client)
        empty = cluster_training.ClusterTraining(engine, spec, _config())
        with pytest.raises(TrainingError, match="no labelled rows for dataset"):
            empty.open(store)  # the local read's words, nothing sent to the workers
        run_etl(spec, write_demo(spec, tmp_path / "raw", 300, seed=3), store)
        job = cluster_training.ClusterTraining(engine, spec, cfg)
        with pytest.raises(TrainingError, match="grid search runs on the local engine"):
            job.open(store)
    store.close()


def test_a_table_past_holdout_max_rows_is_split_at_a_halved_fraction_on_both_engines(
    spec: DatasetSpec,
    cluster: DaskCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client's share stays bounded as the table grows: 0.2 of 6,000 rows would hold
    out 1,200, over the bound of 400, so the rows below 0.05 (300 on average) are held
    out; here and on the cluster alike, recorded on the version."""
    monkeypatch.setattr(cluster_training, "SAMPLE_ROWS", SAMPLE)
    store = EmbeddedStore(tmp_path / "store.sqlite3")
    run_etl(spec, write_demo(spec, tmp_path / "raw", ROWS, seed=12), store)
    cfg = _config().model_copy(update={"holdout_max_rows": 400})
    everything = load_snapshot(store, spec)
    held = id_positions(everything.ids) < 0.05
    results = {}
    with Client(cluster.address) as client:
        engine = Engine("dask", client)
        share, split_at = _client_share(engine, spec, cfg, store)
        assert split_at.test_size == 0.05
        assert len(share.ids) < int(held.sum()) + SAMPLE + 150  # not the 1,200 of 0.2
        results["dask"] = run_train(embedded_settings(tmp_path / "d"), spec, cfg, store, engine)
    results["local"] = run_train(embedded_settings(tmp_path / "l"), spec, cfg, store, LOCAL)
    for where, result in results.items():
        settings = embedded_settings(tmp_path / where[0])
        tracking = MlflowClient(tracking_uri=settings.tracking_uri)
        version = tracking.get_model_version(spec.registered_model, str(result.version))
        assert version.tags[registry.TAG + "holdout"] == "id-blake2b/v1:0.05", where
        assert result.evaluation and result.evaluation["set"]["rows"] == int(held.sum()), where
        assert result.run_id is not None
        params = tracking.get_run(result.run_id).data.params
        assert (params["test_size"], params["holdout_max_rows"]) == ("0.05", "400"), where
        assert params["rows_test"] == str(int(held.sum())), where
    store.close()
