"""Fairness in production: per group of each sensitive column, over the window's
predictions, the selection rate (the share given the positive label, with its Wilson
interval) and its change from training (the hold-out's, from the version's profile),
and, on the predictions whose label has arrived, TPR, FPR and realized accuracy; the
disparities between the groups as at training (`mlcycle.train.fairness`).

A sensitive column that is a model input is read from the prediction log itself; one the
model does not see is joined from the stored rows by id (a prediction whose id is not
stored counts in its `(missing)` group). Two labels only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlcycle.monitor.window import Window
from mlcycle.spec import DatasetSpec, value_text
from mlcycle.train.fairness import MISSING_GROUP, disparities, group_metrics, rate


def _group_labels(values: Any) -> np.ndarray:
    series = pd.Series(values, dtype=object)
    return series.where(series.notna(), MISSING_GROUP).map(lambda v: str(value_text(v))).to_numpy()


def production_fairness(
    spec: DatasetSpec,
    win: Window,
    ref: dict[str, Any],
    stored: pd.DataFrame | None,
) -> dict[str, Any] | None:
    """The report's `fairness` (None without sensitive columns, two labels or rows).
    `stored`: the stored rows by id (`id` as text, `truth` the label or None, and the
    sensitive columns the log does not carry)."""
    target = spec.target
    if not spec.sensitive or target is None or not target.binary or win.ids.size == 0:
        return None
    positive = str(ref.get("positive", target.positive))
    frame = pd.DataFrame({"id": win.ids, "label": win.labels, "score": win.scores})
    for column, values in win.groups.items():
        frame[column] = values
    frame = frame[frame["id"].notna()].copy()
    frame["id"] = frame["id"].map(value_text)
    frame = frame.drop_duplicates("id", keep="first")  # newest first: the latest prediction
    if stored is not None and not stored.empty:
        frame = frame.merge(stored.drop_duplicates("id"), on="id", how="left")
    selected = (frame["label"] == positive).to_numpy()
    truth = frame["truth"] if "truth" in frame else pd.Series([None] * len(frame))
    matured = truth.notna().to_numpy()
    y = (truth == positive).to_numpy()
    score = frame["score"].to_numpy(dtype=np.float64)
    reference = ref.get("fairness") or {}
    out: dict[str, Any] = {}
    for column in spec.sensitive:
        if column not in frame:
            continue
        labels = _group_labels(frame[column])
        groups: dict[str, dict[str, Any]] = {}
        realized: dict[str, dict[str, Any]] = {}
        for group in sorted(set(labels)):
            at = labels == group
            share, interval = rate(int(selected[at].sum()), int(at.sum()))
            before = (reference.get(column) or {}).get(group)
            part: dict[str, Any] = {
                "rows": int(at.sum()),
                "selection_rate": share,
                "selection_rate_ci": interval,
                "training_selection_rate": before,
                "change": None if before is None or share is None else share - before,
            }
            ripe = at & matured
            if ripe.any():
                realized[group] = group_metrics(y[ripe], selected[ripe], score[ripe])
                part["matured"] = int(ripe.sum())
                for key in ("tpr", "fpr", "accuracy"):
                    part[key], part[f"{key}_ci"] = (
                        realized[group][key],
                        realized[group][f"{key}_ci"],
                    )
            groups[group] = part
        window = disparities(
            {
                g: {"selection_rate": p["selection_rate"], "tpr": None, "fpr": None}
                for g, p in groups.items()
            }
        )
        after = disparities(realized) if realized else {}
        out[column] = {
            "groups": groups,
            "demographic_parity_difference": window["demographic_parity_difference"],
            "demographic_parity_ratio": window["demographic_parity_ratio"],
            "equalized_odds_difference": after.get("equalized_odds_difference"),
        }
    return out or None
