"""The registered model as MLflow's clients load it (`mlflow.pyfunc.load_model`,
`mlflow models serve`): raw columns in, the spec's labels and class probabilities out.

Logged as code with every training run (MLflow's models-from-code), beside the fitted
scikit-learn pipeline and the serving bundle's `serving.json`; the mlcycle package
travels with it (`code_paths`), so loading needs no mlcycle install. Input is what a
pandas user has: `pd.read_csv` of a raw file, or JSON records. Values are checked by the
same column rules as the ETL and the API (numbers written as text, aliases, spellings,
null words), the id column and unknown columns are ignored, and a bad value raises one
error naming its row and column. The answer is a DataFrame with `label`, `probability`
(binary: of the positive label; multiclass: of the predicted label) and one
`probability_<label>` column per class: the same numbers `POST /predict` gives. With
`params={"explain": True}` it adds `base` and one `contribution_<feature>` a feature
(more than two labels: per label), the numbers of `POST /predict?explain=true`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class LabelModel(PythonModel):
    def load_context(self, context: Any) -> None:
        import cloudpickle

        from mlcycle.bundle import META_FILE, read_meta
        from mlcycle.rules.records import RequestValidator
        from mlcycle.spec import parse_spec

        with Path(context.artifacts["pipeline"]).open("rb") as handle:
            self.pipeline = cloudpickle.load(handle)
        meta = read_meta(Path(context.artifacts["serving"]))
        self.meta = meta
        spec = parse_spec(meta.spec, META_FILE)
        self.numeric: list[str] = meta.numeric
        self.categorical: list[str] = meta.categorical
        self.validator = RequestValidator(spec, self.numeric, self.categorical)
        self.classes = meta.classes
        self.class_labels = meta.class_labels
        self.positive = meta.positive_index
        self.explainer: Any = None
        found = context.artifacts.get("explainer")
        if found:
            from mlcycle.explanation import load_explainer

            self.explainer = load_explainer(Path(found), meta.fill)

    # no type hints here: MLflow would read them as an input schema
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        from mlcycle.errors import InvalidRequest
        from mlcycle.rules.values import MISSING

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        n = len(frame)
        columns: dict[str, list[Any]] = {}
        for name in [*self.numeric, *self.categorical]:
            if name in frame.columns:
                col = frame[name].astype(object)
                columns[name] = col.where(col.notna(), None).tolist()
        try:
            feed = self.validator.validate_columns(columns, n)
        except InvalidRequest as err:
            problems = "; ".join(
                f"row {e['loc'][2] if len(e['loc']) > 3 else '?'}, column {e['loc'][-1]}: {e['msg']}"
                for e in err.errors[:20]
            )
            raise mlflow.exceptions.MlflowException(
                f"{len(err.errors)} invalid value(s): {problems}"
            ) from None
        X = pd.DataFrame({c: feed[c].ravel().astype(np.float64) for c in self.numeric})
        for c in self.categorical:
            values = pd.Series(feed[c].ravel(), dtype=object)
            X[c] = values.where(values != MISSING, np.nan)
        X = X[[*self.numeric, *self.categorical]]
        proba = np.asarray(self.pipeline.predict_proba(X), dtype=np.float64)
        best = proba.argmax(axis=1)
        out = pd.DataFrame({"label": np.asarray(self.class_labels, dtype=object)[best]})
        out["probability"] = (
            proba[:, self.positive] if self.positive is not None else proba[np.arange(n), best]
        )
        for j, label in enumerate(self.class_labels):
            out[f"probability_{label}"] = proba[:, j]
        if params and params.get("explain"):
            for name, values in self._explained(feed).items():
                out[name] = values
        return out

    def _explained(self, feed: dict[str, Any]) -> dict[str, Any]:
        from mlcycle.explanation import columns, explanation, servable

        model = servable(self.explainer, self.class_labels, self.positive, self.meta)
        try:
            return columns(explanation(model, feed))
        except ValueError as err:
            raise mlflow.exceptions.MlflowException(str(err)) from None


mlflow.models.set_model(LabelModel())
