"""Training logic without MLflow: snapshot checks, reproducibility, model behaviour."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle.errors import TrainingError
from mlcycle.etl.pipeline import run_etl
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.train.config import ModelConfig, TrainConfig
from mlcycle.train.fitting import fit
from mlcycle.train.snapshot import load_snapshot, profile
from tests.data import counts


def test_empty_store_is_a_clear_error(spec: DatasetSpec, tmp_path) -> None:
    with pytest.raises(TrainingError, match=r"no labelled rows .* run `mlcycle etl`"):
        load_snapshot(EmbeddedStore(tmp_path / "s.sqlite3"), spec)


def test_unlabelled_rows_only_is_a_clear_error(spec: DatasetSpec, loan_dir, tmp_path) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    run_etl(spec, loan_dir / "test.csv", store)
    with pytest.raises(TrainingError, match="no labelled rows"):
        load_snapshot(store, spec)


def _docs(n: int, label: str, credit: float | None = 1.0) -> list[dict]:
    return [
        {
            "_id": f"X{label}{i}",
            "Loan_ID": f"X{label}{i}",
            "Gender": "Male",
            "Married": "Yes",
            "Dependents": "0",
            "Education": "Graduate",
            "Self_Employed": "No",
            "ApplicantIncome": 1000.0 + i,
            "CoapplicantIncome": 0.0,
            "LoanAmount": 100.0,
            "Loan_Amount_Term": 360.0,
            "Credit_History": credit,
            "Property_Area": "Urban",
            "Loan_Status": label,
            "_hash": f"h{i}",
            "_batch_id": "b",
        }
        for i in range(n)
    ]


def test_a_single_class_is_a_clear_error(spec: DatasetSpec, tmp_path) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    store.write_rows("loan", _docs(30, "Y"), [])
    with pytest.raises(TrainingError, match="only one class"):
        load_snapshot(store, spec)


def test_a_feature_missing_from_the_snapshot_is_a_clear_error(spec: DatasetSpec, tmp_path) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    store.write_rows("loan", _docs(30, "Y", credit=None) + _docs(30, "N", credit=None), [])
    with pytest.raises(TrainingError, match="Credit_History have no values"):
        load_snapshot(store, spec)


def test_too_few_rows_for_cv_is_a_clear_error(spec: DatasetSpec, tmp_path) -> None:
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    store.write_rows("loan", _docs(30, "Y") + _docs(4, "N"), [])
    with pytest.raises(
        TrainingError, match=r"has too few rows of class .*: need at least \d+ each"
    ):
        fit(load_snapshot(store, spec), spec, TrainConfig())


def test_profile_reports_rows_missing_and_balance(
    spec: DatasetSpec, loan_store: Store, loan_dir: Path
) -> None:
    report = profile(load_snapshot(loan_store, spec), spec)
    n = counts(loan_dir, spec)
    assert report["rows"] == n.train
    assert report["class_balance"] == n.labels
    assert report["missing_share"]["Credit_History"] == pytest.approx(
        n.missing["Credit_History"] / n.train, abs=1e-4
    )


def test_same_data_config_and_seed_give_identical_metrics_and_parameters(
    spec: DatasetSpec, loan_store: Store
) -> None:
    snap = load_snapshot(loan_store, spec)
    first = fit(snap, spec, TrainConfig())
    second = fit(load_snapshot(loan_store, spec), spec, TrainConfig())
    assert first.metrics == second.metrics  # hold-out metrics
    assert first.cv == second.cv  # CV
    np.testing.assert_array_equal(
        first.pipeline.named_steps["model"].coef_, second.pipeline.named_steps["model"].coef_
    )
    third = fit(snap, spec, TrainConfig(seed=7))
    assert third.cv != first.cv  # the seed moves the CV folds...
    assert third.x_test.index.equals(first.x_test.index)  # ...never the hold-out


def test_the_hold_out_is_the_rows_whose_id_hashes_below_test_size(
    spec: DatasetSpec, loan_store: Store
) -> None:
    from mlcycle.train.holdout import id_positions

    snap = load_snapshot(loan_store, spec)
    part = fit(snap, spec, TrainConfig(test_size=0.25)).split
    held = {snap.ids[i] for i in part.X_test.index}
    assert held == {i for i in snap.ids if id_positions([i])[0] < 0.25}
    assert not held & {snap.ids[i] for i in part.X_train.index}
    # a row's side depends on its id alone: not on the order, not on the other rows
    assert id_positions(snap.ids[::-1])[::-1].tolist() == snap.positions.tolist()
    assert id_positions(["LP001002"]).tolist() == id_positions(["LP001002", "x"])[:1].tolist()


def test_model_beats_the_majority_baseline(spec: DatasetSpec, loan_store: Store) -> None:
    fitted = fit(load_snapshot(loan_store, spec), spec, TrainConfig())
    metrics, baseline, cv = fitted.metrics, fitted.baseline, fitted.cv
    assert metrics["roc_auc"] > baseline["roc_auc"] + 0.1
    assert metrics["accuracy"] > baseline["accuracy"]
    assert 0.7 < cv["cv_accuracy_mean"] < 0.9


def test_imputation_statistics_come_from_the_training_split_only(
    spec: DatasetSpec, loan_store: Store
) -> None:
    snap = load_snapshot(loan_store, spec)
    model = fit(snap, spec, TrainConfig()).pipeline
    X_train = snap.X[snap.positions >= 0.2]
    imputer = model.named_steps["features"].named_transformers_["num"].named_steps["impute"]
    assert list(imputer.statistics_) == list(X_train[spec.numeric_features].median())


def test_grid_search_and_alternative_models(spec: DatasetSpec, loan_store: Store) -> None:
    snap = load_snapshot(loan_store, spec)
    cfg = TrainConfig.model_validate({"search": {"grid": {"C": [0.1, 1.0]}}, "cv_folds": 3})
    fitted = fit(snap, spec, cfg)
    model, best, metrics = fitted.pipeline, fitted.best_params, fitted.metrics
    assert metrics["roc_auc"] > 0.6
    assert best["C"] in (0.1, 1.0)
    assert best["C"] == model.named_steps["model"].C
    hgb = TrainConfig(
        model=ModelConfig(kind="hist_gradient_boosting", params={"max_iter": 50}), cv_folds=3
    )
    assert fit(snap, spec, hgb).metrics["roc_auc"] > 0.6


@pytest.fixture(scope="module")
def model_and_rows(
    spec: DatasetSpec, loan_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple:
    store = EmbeddedStore(tmp_path_factory.mktemp("behaviour") / "s.sqlite3")
    run_etl(spec, loan_dir / "train.csv", store)
    snap = load_snapshot(store, spec)
    return fit(snap, spec, TrainConfig()).pipeline, snap.X


class TestBehaviour:
    """Behavioural checks of the trained loan model (Made-With-ML style)."""

    def test_loan_id_does_not_change_the_prediction(self, model_and_rows) -> None:
        model, X = model_and_rows
        rows = X.head(20).copy()
        with_ids = rows.assign(Loan_ID=[f"LP{i:06d}" for i in range(20)])
        other_ids = rows.assign(Loan_ID=[f"ZZ{i:06d}" for i in range(20)])
        np.testing.assert_array_equal(model.predict_proba(with_ids), model.predict_proba(other_ids))

    def test_good_credit_history_never_lowers_approval(self, model_and_rows) -> None:
        model, X = model_and_rows
        bad, good = X.copy(), X.copy()
        bad["Credit_History"] = 0.0
        good["Credit_History"] = 1.0
        classes = list(model.classes_)
        p_bad = model.predict_proba(bad)[:, classes.index(1)]
        p_good = model.predict_proba(good)[:, classes.index(1)]
        assert (p_good >= p_bad).all()
        assert (p_good - p_bad).mean() > 0.2

    def test_higher_income_at_an_equal_loan_never_lowers_approval(self, model_and_rows) -> None:
        model, X = model_and_rows
        classes = list(model.classes_)
        probs = []
        for factor in (0.5, 1.0, 2.0, 4.0):
            richer = X.copy()
            richer["ApplicantIncome"] = X["ApplicantIncome"] * factor
            probs.append(model.predict_proba(richer)[:, classes.index(1)])
        for lower, higher in itertools.pairwise(probs):
            assert (higher >= lower - 1e-12).all()

    def test_unknown_category_and_missing_values_still_predict(self, model_and_rows) -> None:
        model, X = model_and_rows
        row = X.head(1).copy()
        row["Property_Area"] = "Moon"
        row["LoanAmount"] = np.nan
        row["Gender"] = np.nan
        proba = model.predict_proba(pd.DataFrame(row))
        assert proba.shape == (1, 2)
        assert np.isfinite(proba).all()


def test_a_category_of_many_values_is_encoded_sparse_or_refused_naming_it() -> None:
    """50,000 distinct values: a kind that takes sparse input gets a sparse one-hot; a
    dense one is refused before fitting, naming the column and its cardinality."""
    import pandas as pd

    from mlcycle.errors import TrainingError
    from mlcycle.spec import DatasetSpec
    from mlcycle.train.config import ModelConfig
    from mlcycle.train.features import build_pipeline, encoding_footprint

    values = [f"v{i}" for i in range(50_000)]
    spec = DatasetSpec.model_validate(
        {
            "name": "wide",
            "id_column": "id",
            "target": {"column": "y", "labels": {"a": 1, "b": 0}, "positive": "a"},
            "columns": {
                "id": {"type": "string", "nullable": False},
                "shop": {"type": "category", "values": values},
                "x": {"type": "float"},
                "y": {"type": "category", "values": ["a", "b"]},
            },
        }
    )
    X = pd.DataFrame({"shop": values, "x": [float(i) for i in range(50_000)]})
    y = [i % 2 for i in range(50_000)]
    linear = ModelConfig(kind="logistic_regression", params={"max_iter": 50})
    width = encoding_footprint(X, spec, linear, available=2**30)
    assert width == 50_001
    pipeline = build_pipeline(spec, linear, 0, width)
    pipeline.fit(X, y)  # ~8 GiB dense; sparse it is a few MB
    assert pipeline.named_steps["features"].sparse_output_
    dense = ModelConfig(kind="hist_gradient_boosting", params={})
    with pytest.raises(TrainingError, match=r"shop \(50,000 distinct values\).*GiB"):
        encoding_footprint(X, spec, dense, available=2**30)


@pytest.mark.parametrize("test_size", [0.2, 0.25, 0.3])
def test_the_hold_out_fraction_is_halved_until_its_rows_fit_the_bound(test_size: float) -> None:
    from mlcycle.train.holdout import capped_fraction

    bound = 1_000_000
    previous = test_size
    for rows in [0, 10, 4_000_000, 5_000_000, 5_000_001, 9_999_999, 10**8, 10**10]:
        found = capped_fraction(test_size, bound, rows)
        assert rows * found <= bound  # bounded, however large the table
        assert found == test_size or rows * found * 2 > bound  # the largest step that fits
        assert found <= previous  # a larger table never holds out a larger fraction
        assert (test_size / found).is_integer() and (test_size / found) in {2**k for k in range(64)}
        previous = found
    assert capped_fraction(test_size, None, 10**10) == test_size
