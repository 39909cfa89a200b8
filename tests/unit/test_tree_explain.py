"""Explanations of tree ensembles: the bundle's leaf tables give, through the serving path
(`POST /predict?explain=true`'s code and `mlcycle predict --explain`'s), exactly the
SHAP values of the `shap` library's TreeExplainer on the same fitted pipeline, summed by
feature, and they add up to the ensemble's raw score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import shap

from mlcycle.serve.batch import score_frame
from mlcycle.serve.explain import explain
from mlcycle.serve.model import LoadedModel, _load_folder
from mlcycle.spec import DatasetSpec
from mlcycle.train.config import ModelConfig
from mlcycle.train.features import build_pipeline, model_frame
from mlcycle.train.package import serving_bundle
from mlcycle.train.snapshot import Snapshot
from mlcycle.treeshap import leaf_tables, shap_values
from tests.data import renamed

PARAMS = {
    "hist_gradient_boosting": {"max_iter": 30},
    "random_forest": {"n_estimators": 12, "max_depth": 9},
    "lightgbm": {"n_estimators": 30, "num_leaves": 15},
}
KINDS = list(PARAMS)


@pytest.fixture(scope="module")
def snapshot(synthetic_snapshot: Snapshot) -> Snapshot:
    return synthetic_snapshot


def _records(spec: DatasetSpec, snap: Snapshot, n: int = 60) -> list[dict]:
    """Training rows with holes: missing numbers and categories."""
    rows = snap.X.head(n).copy()
    numeric = [c for c in spec.numeric_features if spec.columns[c].nullable]
    categorical = [c for c in spec.categorical_features if spec.columns[c].nullable]
    rows.loc[rows.index[::3], numeric[0]] = np.nan
    rows.loc[rows.index[1::4], categorical[0]] = np.nan
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in rows.to_dict("records")
    ]


def _served(
    spec: DatasetSpec, snap: Snapshot, kind: str, y: np.ndarray, folder: Path
) -> tuple[object, LoadedModel]:
    pipeline = build_pipeline(spec, ModelConfig(kind=kind, params=PARAMS[kind]), 3)
    pipeline.fit(snap.X, y)
    meta = serving_bundle(pipeline, spec, snap, folder)
    assert meta.explain_note and meta.explain_note.startswith("exact TreeSHAP"), meta
    model = _load_folder(folder, "m", "1", "champion", "run", "registry", "digest")
    return pipeline, model


def _shap_by_feature(pipeline, spec: DatasetSpec, frame: pd.DataFrame) -> np.ndarray:
    """shap's TreeExplainer on the pipeline's encoded rows, summed by the feature each
    encoded column comes from: rows x features x outputs."""
    encoded = np.asarray(pipeline[:-1].transform(frame), dtype=np.float64)
    values = np.asarray(shap.TreeExplainer(pipeline.named_steps["model"]).shap_values(encoded))
    values = values if values.ndim == 3 else values[:, :, None]
    ct = pipeline.named_steps["features"]
    owner: list[str] = list(spec.numeric_features)
    onehot = ct.named_transformers_["cat"].named_steps["onehot"]
    for column, cats in zip(spec.categorical_features, onehot.categories_, strict=True):
        owner += [column] * len(cats)
    names = spec.numeric_features + spec.categorical_features
    out = np.zeros((len(frame), len(names), values.shape[2]))
    for j, column in enumerate(owner):
        out[:, names.index(column)] += values[:, j]
    return out


def _raw(pipeline, kind: str, frame: pd.DataFrame) -> np.ndarray:
    """The ensemble's raw score: rows x outputs."""
    if kind == "random_forest":
        return pipeline.predict_proba(frame)
    if kind == "lightgbm":
        encoded = pipeline[:-1].transform(frame)
        raw = np.asarray(pipeline[-1].predict(encoded, raw_score=True), dtype=np.float64)
    else:
        raw = np.asarray(pipeline.decision_function(frame), dtype=np.float64)
    return raw if raw.ndim == 2 else raw[:, None]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("positive", ["Y", "N"])
def test_two_labels_explained_as_shap_explains_them(
    spec: DatasetSpec, snapshot: Snapshot, tmp_path: Path, kind: str, positive: str
) -> None:
    assert spec.target is not None
    target = {**spec.target.model_dump(mode="json", exclude_none=True), "positive": positive}
    spec2 = renamed(spec, "trees", target=target)
    pipeline, model = _served(spec2, snapshot, kind, snapshot.y, tmp_path)
    records = _records(spec2, snapshot)
    found = explain(orjson.dumps({"records": records}), model, 1000)
    assert isinstance(found, dict), getattr(found, "body", found)
    frame = model_frame(pd.DataFrame(records), spec2)
    names = spec2.numeric_features + spec2.categorical_features
    got = np.array([[c[n] for n in names] for c in found["contributions"]])
    column = model.positive if model.positive is not None else 1
    expected = _shap_by_feature(pipeline, spec2, frame)
    raw = _raw(pipeline, kind, frame)
    if expected.shape[2] == 1:  # boosting: class 1's log-odds, turned to the positive's
        sign = 1.0 if column == 1 else -1.0
        expected, raw = sign * expected[:, :, 0], sign * raw[:, 0]
    else:  # a forest: the positive label's probability
        expected, raw = expected[:, :, column], raw[:, column]
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    total = np.asarray(found["base"]) + got.sum(axis=1)
    np.testing.assert_allclose(total, raw, atol=1e-6, rtol=0)
    for contributions, reasons in zip(found["contributions"], found["reasons"], strict=True):
        worst = sorted(contributions.items(), key=lambda kv: kv[1])[: len(reasons)]
        assert [r["feature"] for r in reasons] == [k for k, v in worst if v < 0]
    # a file scored in bulk carries the same numbers
    batch, _ = score_frame(pd.DataFrame(records).assign(**{spec2.id_column: "x"}), model, True)
    np.testing.assert_allclose(batch["base"], found["base"], atol=1e-12)
    bulk = batch[[f"contribution_{n}" for n in names]].to_numpy()
    np.testing.assert_allclose(bulk, got, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_three_labels_explained_per_label(
    spec: DatasetSpec, snapshot: Snapshot, tmp_path: Path, kind: str
) -> None:
    income = snapshot.X[spec.numeric_features[0]].fillna(0).to_numpy()
    y3 = np.digitize(income, np.quantile(income, [1 / 3, 2 / 3]))
    labels = {"N": 0, "Y": 1, "M": 2}  # (the column's values, and one more)
    spec3 = renamed(spec, "three", target={"column": spec.target_column, "labels": labels})
    pipeline, model = _served(spec3, snapshot, kind, y3, tmp_path)
    records = _records(spec3, snapshot)
    found = explain(orjson.dumps({"records": records}), model, 1000)
    assert isinstance(found, dict), getattr(found, "body", found)
    frame = model_frame(pd.DataFrame(records), spec3)
    names = spec3.numeric_features + spec3.categorical_features
    got = np.array(
        [
            [[c[label][n] for label in model.class_labels] for n in names]
            for c in found["contributions"]
        ]
    )
    np.testing.assert_allclose(got, _shap_by_feature(pipeline, spec3, frame), atol=1e-6, rtol=0)
    base = np.array([[b[label] for label in model.class_labels] for b in found["base"]])
    np.testing.assert_allclose(base + got.sum(axis=1), _raw(pipeline, kind, frame), atol=1e-6)


def test_the_leaf_tables_follow_repeated_splits_and_every_row() -> None:
    """A hand-made tree that splits twice on one feature: SHAP values by enumeration of
    the coalitions (the definition), for rows on every path."""
    tree = {
        "left": np.array([1, 3, -1, -1, -1]),
        "right": np.array([2, 4, -1, -1, -1]),
        "feature": np.array([0, 0, 1, -2, -2]),
        "threshold": np.array([5.0, 2.0, 0.5, 0.0, 0.0]),
        "cover": np.array([10.0, 6.0, 4.0, 2.0, 4.0]),
        "value": np.array([[0.0], [0.0], [3.0], [1.0], [-2.0]]),
    }
    tables = leaf_tables([tree], 1)
    X = np.array([[1.0, 0.0], [3.0, 1.0], [7.0, 0.0], [5.0, 9.0]])
    phi = shap_values(tables, X)[:, :, 0]

    def value(x: np.ndarray, known: set[int]) -> float:
        """E[f(x) | x_known] by the cover-weighted descent TreeSHAP defines."""

        def down(node: int) -> float:
            if tree["left"][node] < 0:
                return float(tree["value"][node, 0])
            f = int(tree["feature"][node])
            left, right = int(tree["left"][node]), int(tree["right"][node])
            if f in known:
                return down(left if x[f] <= tree["threshold"][node] else right)
            c = tree["cover"]
            return (c[left] * down(left) + c[right] * down(right)) / c[node]

        return down(0)

    for row, x in enumerate(X):
        whole = value(x, {0, 1})
        assert tables["expected"][0] + phi[row].sum() == pytest.approx(whole, abs=1e-12)
        for i in (0, 1):
            other = 1 - i
            exact = 0.5 * (value(x, {i}) - value(x, set())) + 0.5 * (
                value(x, {0, 1}) - value(x, {other})
            )
            assert phi[row, i] == pytest.approx(exact, abs=1e-12)
