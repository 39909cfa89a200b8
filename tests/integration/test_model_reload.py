"""What the server loads: a candidate must score its reference batch before the swap; the
cache is keyed by run and content; the server never creates tracking state."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlcycle import registry
from mlcycle.config import Settings, get_settings
from mlcycle.serve.model import CandidateRejected, ModelManager, _load_folder, self_check
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.train.config import load_train_config
from mlcycle.train.train import run_train
from tests.data import CONFIG_PATH

pytestmark = pytest.mark.integration


def _settings(tmp_path: Path, name: str = "data") -> Settings:
    return get_settings().model_copy(update={"data_dir": tmp_path / name, "reload_interval": 0})


def _artifact_bundle(settings: Settings, run_id: str) -> Path:
    (bundle,) = [p.parent for p in settings.artifact_root.rglob("serving.json") if run_id in str(p)]
    return bundle


def test_a_version_that_cannot_score_is_never_swapped_in(
    spec: DatasetSpec, loan_store: Store, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    cfg = load_train_config(CONFIG_PATH)
    first = run_train(settings, spec, cfg, loan_store)
    failures: list[str] = []
    manager = ModelManager(settings, spec.registered_model, on_failure=failures.append)
    manager.start()
    assert manager.current is not None and manager.current.version == first.version

    second = run_train(settings, spec, cfg, loan_store, again=True)
    assert second.champion_after == "2"
    # v2 loads, but its graph gives other scores than training recorded (a broken export)
    broken = _artifact_bundle(settings, second.run_id)
    example = json.loads((broken / "example.json").read_text())
    example["class_probabilities"] = [p[::-1] for p in example["class_probabilities"]]
    (broken / "example.json").write_text(json.dumps(example))

    assert manager.refresh() is False
    assert manager.current.version == "1" and manager.current.run_id == first.run_id
    assert failures == ["CandidateRejected"]
    assert "refused" in (manager.last_error or "")
    pointer = json.loads(
        (settings.serving_cache / spec.registered_model / "last_good.json").read_text()
    )
    assert pointer["run_id"] == first.run_id


def test_self_check_refuses_a_bundle_without_a_reference_batch(
    spec: DatasetSpec, loan_store: Store, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    result = run_train(settings, spec, load_train_config(CONFIG_PATH), loan_store)
    manager = ModelManager(settings, spec.registered_model)
    assert manager.refresh()
    folder = settings.serving_cache / spec.registered_model / result.run_id
    (folder / "example.json").unlink()
    with pytest.raises(CandidateRejected, match="no reference batch"):
        self_check(manager.current, folder)


def test_a_linear_model_is_scored_by_its_fold_which_must_match_the_graph(
    spec: DatasetSpec, loan_store: Store, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    cfg = load_train_config(CONFIG_PATH)
    assert cfg.model.kind == "logistic_regression"
    result = run_train(settings, spec, cfg, loan_store)
    folded = ModelManager(settings, spec.registered_model)
    assert folded.refresh() and folded.current is not None
    assert folded.current.describe()["scorer"] == "linear"
    graph = ModelManager(
        settings.model_copy(update={"serving_scorer": "onnxruntime"}), spec.registered_model
    )
    assert graph.refresh() and graph.current is not None
    assert graph.current.describe()["scorer"] == "onnxruntime"
    records = json.loads((_artifact_bundle(settings, result.run_id) / "example.json").read_text())
    rows = records["records"]
    feed = folded.current.validator.validate(rows, single=False)
    np.testing.assert_allclose(
        folded.current.scorer.proba(feed), graph.current.scorer.proba(feed), rtol=0, atol=1e-7
    )
    one = folded.current.validator.validate(rows[:1], single=True)
    np.testing.assert_allclose(
        folded.current.scorer.proba(one), graph.current.scorer.proba(one), rtol=0, atol=1e-7
    )
    plain = [folded.current.validator.plain_row(r) for r in rows]
    plain_scores = [folded.current.scorer.one(r) for r in plain if r is not None]
    assert plain_scores and graph.current.scorer.one(plain[0] or {}) is None

    # the one-record path is checked at load too: a scorer whose `one` drifts is refused
    class Skewed:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def proba(self, feed: dict[str, np.ndarray]) -> np.ndarray:
            return self.inner.proba(feed)

        def one(self, row: dict[str, Any]) -> list[float] | None:
            return [p + 1e-3 for p in self.inner.one(row)]

    bundle = settings.serving_cache / spec.registered_model / result.run_id
    self_check(folded.current, bundle)
    with pytest.raises(CandidateRejected, match="differ from training"):
        self_check(
            dataclasses.replace(folded.current, scorer=Skewed(folded.current.scorer)), bundle
        )

    # a fold that scores differently from what training recorded is refused at load
    folder = settings.serving_cache / spec.registered_model / result.run_id
    fold = json.loads((folder / "linear.json").read_text())
    fold["base"] = [b + 0.5 for b in fold["base"]]
    (folder / "linear.json").write_text(json.dumps(fold))
    reloaded = ModelManager(settings, spec.registered_model)
    assert reloaded.load_cached() is False  # the cached bundle no longer matches its digest
    tampered = _load_folder(folder, "m", "1", "champion", result.run_id, "cache", "x")
    with pytest.raises(CandidateRejected, match="differ from training"):
        self_check(tampered, folder)


def test_a_moved_tracking_store_is_not_recreated_and_model_says_what_is_served(
    spec: DatasetSpec, loan_store: Store, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    cfg = load_train_config(CONFIG_PATH)
    old = run_train(settings, spec, cfg, loan_store)
    manager = ModelManager(settings, spec.registered_model)
    assert manager.refresh()

    # the tracking store moves: the server's URI now names a store that does not exist
    db = tmp_path / "elsewhere" / "mlflow.db"
    moved = settings.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{db}"})
    restarted = ModelManager(moved, spec.registered_model)
    restarted.start()
    assert not db.exists() and not db.parent.exists(), "the server created a tracking store"
    assert restarted.tracking_reachable is False
    served = restarted.current
    assert served is not None and served.source == "cache" and served.run_id == old.run_id
    assert served.describe()["run_id"] == old.run_id

    # a new, empty tracking store: its "version 1" is another run, and it replaces the cache
    db.parent.mkdir()
    new = run_train(moved, spec, cfg, loan_store)
    assert new.version == "1" and new.run_id != old.run_id
    assert restarted.refresh() is True
    assert restarted.current.run_id == new.run_id
    assert len(restarted.current.describe()["bundle_sha256"]) == 64
    client = registry.connect(moved, create=False)
    assert registry.champion(client, spec.registered_model).run_id == new.run_id


def test_a_version_with_another_contract_is_refused_by_a_running_server(
    spec: DatasetSpec, loan_store: Store, tmp_path: Path
) -> None:
    from tests.data import renamed

    settings = _settings(tmp_path)
    cfg = load_train_config(CONFIG_PATH)
    run_train(settings, spec, cfg, loan_store)
    failures: list[str] = []
    manager = ModelManager(settings, spec.registered_model, on_failure=failures.append)
    manager.start()
    fewer = renamed(spec, spec.registered_model, features=spec.feature_columns[:-2])
    other = run_train(settings, fewer, cfg, loan_store)
    assert other.champion_after == "1"  # the gate does not promote another contract
    client = registry.connect(settings)
    registry.set_champion(client, spec.registered_model, other.version, "1", forced_reason="test")
    assert manager.refresh() is False
    assert failures == ["ContractChanged"]
    assert manager.current.version == "1"
    assert "contract" in (manager.last_error or "")
