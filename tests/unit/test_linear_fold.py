"""The folded linear scorer: found by probing the fitted pipeline at export, refused for
anything that is not linear column by column, and scoring what scikit-learn scores, one
record (plain Python) or a batch (numpy), with missing numbers and unseen categories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from mlcycle.fold import LinearScorer
from mlcycle.rules.records import RequestValidator
from mlcycle.spec import DatasetSpec
from mlcycle.train.config import ModelConfig
from mlcycle.train.export import serving_copy
from mlcycle.train.features import MISSING, build_pipeline, model_frame
from mlcycle.train.linear import fold_linear
from mlcycle.train.snapshot import Snapshot


@pytest.fixture(scope="module")
def snapshot(synthetic_snapshot: Snapshot) -> Snapshot:
    return synthetic_snapshot


def _fit(spec: DatasetSpec, snap: Snapshot, y: np.ndarray | None = None, **params: object):
    pipeline = build_pipeline(spec, ModelConfig(kind="logistic_regression", params=params), 3)
    return pipeline.fit(snap.X, snap.y if y is None else y)


def _fold(pipeline, spec: DatasetSpec, snap: Snapshot):
    serving, fill = serving_copy(pipeline, spec)
    fold, why = fold_linear(pipeline, serving, spec, snap.X, fill)
    return fold, why, fill


def _awkward_records(spec: DatasetSpec, snap: Snapshot, n: int = 40) -> list[dict]:
    """Training rows with holes: missing numbers, missing and never-seen categories."""
    rows = snap.X.head(n).copy()
    numeric = [c for c in spec.numeric_features if spec.columns[c].nullable]
    categorical = [c for c in spec.categorical_features if spec.columns[c].nullable]
    assert numeric and categorical
    rows.loc[rows.index[::3], numeric[0]] = np.nan
    rows.loc[rows.index[1::4], categorical[0]] = np.nan
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in rows.to_dict("records")
    ]
    return records


def _frame(records: list[dict], spec: DatasetSpec) -> pd.DataFrame:
    return model_frame(pd.DataFrame(records), spec)


def test_a_binary_logistic_regression_folds_and_scores_as_scikit_learn(
    spec: DatasetSpec, snapshot: Snapshot
) -> None:
    pipeline = _fit(spec, snapshot)
    fold, why, fill = _fold(pipeline, spec, snapshot)
    assert fold is not None, why
    assert fold["link"] == "logistic" and fold["max_abs_diff"] < 1e-9
    assert set(fold["numeric"]) == set(spec.numeric_features)
    assert set(fold["categorical"]) == set(spec.categorical_features)
    scorer = LinearScorer(fold, fill)
    validator = RequestValidator(spec, spec.numeric_features, spec.categorical_features)
    records = _awkward_records(spec, snapshot)
    expected = pipeline.predict_proba(_frame(records, spec))
    batch = scorer.proba(validator.validate(records, single=False))
    np.testing.assert_allclose(batch, expected, rtol=0, atol=1e-9)
    plain = 0
    for i, record in enumerate(records):  # the one-record paths (plain Python floats)
        one = scorer.proba(validator.validate([record], single=True))
        np.testing.assert_allclose(one, expected[i : i + 1], rtol=0, atol=1e-9)
        row = validator.plain_row(record)
        if row is not None:  # written as the spec spells it: no arrays at all
            plain += 1
            np.testing.assert_allclose([scorer.one(row)], expected[i : i + 1], rtol=0, atol=1e-9)
    assert plain > 0


def test_an_unseen_category_counts_as_the_encoder_ignoring_it(
    spec: DatasetSpec, snapshot: Snapshot
) -> None:
    pipeline = _fit(spec, snapshot)
    fold, why, fill = _fold(pipeline, spec, snapshot)
    assert fold is not None, why
    name = spec.categorical_features[0]
    known = fold["categorical"][name]["values"]
    assert "no-such-category" not in known
    feed = {n: np.array([[0.0], [1.0]]) for n in spec.numeric_features}
    feed.update({n: np.array([[MISSING]] * 2, dtype=object) for n in spec.categorical_features})
    feed[name] = np.array([["no-such-category"], [next(iter(known))]], dtype=object)
    graph_inputs = pd.DataFrame({k: v.ravel() for k, v in feed.items()})
    serving, _ = serving_copy(pipeline, spec)
    with pytest.warns(UserWarning):  # the imputer-less copy's encoder saw arrays
        expected = serving.predict_proba(graph_inputs)
    scorer = LinearScorer(fold, fill)
    np.testing.assert_allclose(scorer.proba(feed), expected, atol=1e-9)  # the batch path
    first = {k: v[:1] for k, v in feed.items()}  # the one-record path
    np.testing.assert_allclose(scorer.proba(first), expected[:1], atol=1e-9)
    row = {k: v[0, 0] for k, v in feed.items()}
    np.testing.assert_allclose([scorer.one(row)], expected[:1], atol=1e-9)  # without arrays


@pytest.mark.parametrize("link", ["softmax", "ovr"])
def test_three_classes_fold_with_the_classifiers_own_link(
    spec: DatasetSpec, snapshot: Snapshot, link: str
) -> None:
    """Multinomial logistic regression (softmax), and a one-vs-rest linear model whose
    probabilities are normalised per row (SGD with log loss)."""
    income = snapshot.X[spec.numeric_features[0]].fillna(0).to_numpy()
    y3 = np.digitize(income, np.quantile(income, [1 / 3, 2 / 3]))
    pipeline = build_pipeline(spec, ModelConfig(kind="logistic_regression", params={}), 3)
    if link == "ovr":
        pipeline.set_params(model=SGDClassifier(loss="log_loss", random_state=0))
    pipeline.fit(snapshot.X, y3)
    fold, why, fill = _fold(pipeline, spec, snapshot)
    assert fold is not None, why
    assert fold["link"] == link and len(fold["base"]) == 3
    validator = RequestValidator(spec, spec.numeric_features, spec.categorical_features)
    records = _awkward_records(spec, snapshot)
    got = LinearScorer(fold, fill).proba(validator.validate(records, single=False))
    np.testing.assert_allclose(got, pipeline.predict_proba(_frame(records, spec)), atol=1e-9)
    one = LinearScorer(fold, fill).proba(validator.validate(records[:1], single=True))
    assert one.shape == (1, 3)
    assert LinearScorer(fold, fill).one({}) is None  # arrays only: `proba` answers


def test_trees_get_no_fold(spec: DatasetSpec, snapshot: Snapshot) -> None:
    pipeline = build_pipeline(spec, ModelConfig(kind="random_forest", params={}), 3)
    pipeline.set_params(model=RandomForestClassifier(n_estimators=5, random_state=0))
    pipeline.fit(snapshot.X, snapshot.y)
    fold, why, _ = _fold(pipeline, spec, snapshot)
    assert fold is None and why == "not a linear model"


def test_a_transform_that_is_not_affine_gets_no_fold(spec: DatasetSpec, snapshot: Snapshot) -> None:
    """Squared numbers in front of the classifier: probing one change at a time finds
    slopes that do not hold elsewhere, and the check against scikit-learn says so."""
    features = ColumnTransformer(
        [
            (
                "num",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median")),
                        ("square", FunctionTransformer(lambda x: (np.asarray(x) / 1000.0) ** 2)),
                    ]
                ),
                spec.numeric_features,
            ),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING)),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                spec.categorical_features,
            ),
        ]
    )
    pipeline = Pipeline([("features", features), ("model", LogisticRegression(max_iter=2000))])
    pipeline.fit(snapshot.X, snapshot.y)
    fold, why, _ = _fold(pipeline, spec, snapshot)
    assert fold is None and "no fold within" in why


def test_an_unknown_link_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="unknown link"):
        LinearScorer({"link": "probit", "base": [0.0], "numeric": {}, "categorical": {}})
