"""Feature engineering inside one sklearn Pipeline built from the dataset spec.

Imputation, one-hot encoding and scaling are fitted on the training split only and are
logged with the model, so serving takes the raw columns a client sends and nothing
leaks from the evaluation split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlcycle.spec import DatasetSpec, value_text
from mlcycle.train.config import ModelConfig

MISSING = "__missing__"


def estimator(cfg: ModelConfig, seed: int) -> ClassifierMixin:
    params: dict[str, Any] = dict(cfg.params)
    if cfg.kind == "logistic_regression":
        return LogisticRegression(random_state=seed, **params)
    if cfg.kind == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(random_state=seed, **params)
    if cfg.kind == "random_forest":
        return RandomForestClassifier(random_state=seed, **params)
    return DummyClassifier(strategy="most_frequent", **params)


def preprocessor(spec: DatasetSpec) -> ColumnTransformer:
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [
            ("num", numeric, spec.numeric_features),
            ("cat", categorical, spec.categorical_features),
        ],
        remainder="drop",
        verbose_feature_names_out=True,
    )


def build_pipeline(spec: DatasetSpec, cfg: ModelConfig, seed: int) -> Pipeline:
    return Pipeline([("features", preprocessor(spec)), ("model", estimator(cfg, seed))])


def model_frame(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The feature columns in model input form: numbers as float64 (NaN when missing),
    categories and booleans as their canonical text (NaN when missing), in spec order:
    the same text the API's validator gives the serving runtime ("true", not "True")."""
    out = {}
    for name in spec.numeric_features:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in spec.categorical_features:
        col = frame[name].astype(object)
        out[name] = col.where(col.notna(), np.nan).map(
            lambda v: v if isinstance(v, float) and np.isnan(v) else value_text(v)
        )
    return pd.DataFrame(out, index=frame.index)[spec.numeric_features + spec.categorical_features]
