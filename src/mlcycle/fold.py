"""The link of a folded linear model (decision values -> class probabilities), shared by
training, which finds and checks the fold, and serving, which scores with it."""

from __future__ import annotations

import numpy as np

LINKS = ("logistic", "softmax", "ovr")
"""Binary logistic regression; multinomial; one-vs-rest normalised (liblinear)."""


def apply_link(link: str, z: np.ndarray) -> np.ndarray:
    """Decision values (n x K') -> class probabilities (n x K), as scikit-learn's linear
    classifiers compute them (K' = 1 for two classes)."""
    with np.errstate(over="ignore"):
        if link == "logistic":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.column_stack([1.0 - p, p])
        if link == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if link == "ovr":
            p = 1.0 / (1.0 + np.exp(-z))
            return p / p.sum(axis=1, keepdims=True)
    raise ValueError(f"unknown link {link!r}")
