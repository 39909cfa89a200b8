"""Export the fitted pipeline to ONNX for serving, and prove parity with scikit-learn.

The serving runtime (onnxruntime) then needs neither scikit-learn, scipy nor pandas, and
scores a row in ~50 µs instead of ~3 ms. Missing categories are fed as MISSING (the
serving adapter does what the categorical imputer does), so the exported graph skips
that imputer: onnxruntime has no string Imputer kernel.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.spec import DatasetSpec
from mlcycle.train.features import MISSING

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class OnnxExport:
    model: bytes | None
    max_abs_diff: float | None
    usable: bool
    reason: str


def onnx_feed(frame: pd.DataFrame, spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Model-input columns as the ONNX graph takes them: float32 numbers, strings."""
    feed: dict[str, np.ndarray] = {}
    for name in spec.numeric_features:
        feed[name] = frame[name].to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)
    for name in spec.categorical_features:
        col = frame[name].astype(object)
        feed[name] = col.where(col.notna(), MISSING).astype(str).to_numpy().reshape(-1, 1)
    return feed


def export_onnx(
    pipeline: Any, spec: DatasetSpec, sample: pd.DataFrame, positive: int
) -> OnnxExport:
    """Convert and check parity on `sample`; never raises (serving can fall back)."""
    try:
        import onnxruntime as ort
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as err:
        return OnnxExport(None, None, False, f"ONNX tooling not installed: {err}")
    serving = copy.deepcopy(pipeline)
    cat = serving.named_steps["features"].named_transformers_.get("cat")
    if cat is not None and cat.steps and cat.steps[0][0] == "impute":
        del cat.steps[0]
    inputs = [(c, FloatTensorType([None, 1])) for c in spec.numeric_features] + [
        (c, StringTensorType([None, 1])) for c in spec.categorical_features
    ]
    try:
        onx = convert_sklearn(
            serving,
            initial_types=inputs,
            options={id(serving.named_steps["model"]): {"zipmap": False}},
            target_opset=17,
        )
        blob = onx.SerializeToString()
        sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        probs = sess.run(None, onnx_feed(sample, spec))[1]
    except Exception as err:  # converter gaps are many and model-specific
        logger.warning("ONNX export failed: %s", err)
        return OnnxExport(None, None, False, f"export failed: {type(err).__name__}: {err}"[:500])
    classes = list(pipeline.classes_)
    expected = pipeline.predict_proba(sample)[:, classes.index(positive)]
    diff = float(np.max(np.abs(probs[:, classes.index(positive)] - expected)))
    usable = diff < PARITY_TOLERANCE
    reason = f"max |p_onnx - p_sklearn| = {diff:.2e} on {len(sample)} rows" + (
        "" if usable else f" exceeds {PARITY_TOLERANCE:g}: serving uses scikit-learn"
    )
    return OnnxExport(blob, diff, usable, reason)
