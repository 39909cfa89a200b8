"""The challenger against the champion on live traffic: both scored the same requests
(the shadow logs beside the champion, `mlcycle.serve.shadow`), so once labels mature the
two are compared on the same ids with paired tests: DeLong's for ROC AUC (binary),
McNemar's exact test for accuracy. The verdict is `better` or `worse` only when the
interval of the difference excludes 0 on at least `min_paired` rows; else `undecided`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mlcycle.monitor.stats import delong, mcnemar
from mlcycle.monitor.window import Window
from mlcycle.spec import DatasetSpec, value_text
from mlcycle.store.base import Store, shadow_collection

logger = logging.getLogger(__name__)


def _shadow_rows(
    store: Store, spec: DatasetSpec, alias: str, positive: str | None, limit: int
) -> tuple[str | None, dict[str, tuple[float, str]]]:
    """(the newest shadow version, {id: (score, label)}) from the newest `limit` shadow
    predictions of that version (the newest prediction of an id wins)."""
    version: str | None = None
    rows: dict[str, tuple[float, str]] = {}
    seen = 0
    for docs in store.scan(shadow_collection(spec.name, alias), chunk=500):
        for doc in docs:
            if version is None:
                version = str(doc.get("model_version"))
            if str(doc.get("model_version")) != version:
                continue
            try:
                ids, labels = doc["ids"], doc["labels"]
                classes = doc["class_probabilities"]
                scores = classes[positive] if positive is not None else doc["probabilities"]
            except (KeyError, TypeError):
                continue  # not a prediction entry: skipped, as the window skips it
            for i, label, score in zip(ids, labels, scores, strict=False):
                if i is not None and score is not None:
                    rows.setdefault(value_text(i), (float(score), str(label)))
            seen += len(ids)
            if seen >= limit:
                return version, rows
    return version, rows


def compare(
    store: Store,
    spec: DatasetSpec,
    win: Window,
    positive: str | None,
    alias: str = "challenger",
    min_paired: int = 200,
    limit: int = 100_000,
) -> dict[str, Any] | None:
    """The paired comparison of the shadow under `alias` with the champion's window on
    matured labels; None when there is no shadow log or its newest version is the
    window's own (a challenger since promoted)."""
    assert spec.target is not None
    version, shadow = _shadow_rows(store, spec, alias, positive, limit)
    if version is None or version == win.version:
        return None  # no shadow log, or its newest version is the champion now (promoted)
    out: dict[str, Any] = {"alias": alias, "version": version, "paired": 0, "verdict": "undecided"}
    champion: dict[str, tuple[float, str]] = {}
    for i, score, label in zip(win.ids, win.scores, win.labels, strict=False):
        if i is not None:
            champion.setdefault(value_text(i), (float(score), str(label)))  # newest first
    both = [i for i in champion if i in shadow]
    if not both:
        out["reason"] = "no request scored by both yet"
        return out
    target = spec.target.column
    truth = store.read_snapshot(spec.name, columns=[spec.id_column, target], require=target)
    known = (
        {}
        if truth.empty
        else dict(
            zip(truth[spec.id_column].map(value_text), truth[target].map(value_text), strict=True)
        )
    )
    ids = [i for i in both if i in known]
    out["paired"] = len(ids)
    if len(ids) < min_paired:
        out["reason"] = f"{len(ids)} matured rows scored by both, fewer than {min_paired}"
        return out
    y = np.array([known[i] for i in ids], dtype=object)
    right = [np.array([side[i][1] for i in ids], dtype=object) == y for side in (champion, shadow)]
    out["accuracy"] = mcnemar(right[0], right[1])
    deciding = out["accuracy"]
    if positive is not None:
        hit = y == positive
        if 2 <= hit.sum() <= hit.size - 2:
            out["roc_auc"] = delong(
                hit,
                np.array([champion[i][0] for i in ids]),
                np.array([shadow[i][0] for i in ids]),
            )
            deciding = out["roc_auc"]
    low, high = deciding["ci"]
    metric = "roc_auc" if deciding is out.get("roc_auc") else "accuracy"
    out["metric"] = metric
    if low > 0:
        out["verdict"] = "better"
    elif high < 0:
        out["verdict"] = "worse"
    out["reason"] = (
        f"{metric} challenger v{version} {deciding['second']:.4f} vs champion "
        f"{deciding['first']:.4f} on {len(ids)} paired matured rows: difference "
        f"{deciding['difference']:+.4f} (95 % CI {low:+.4f} to {high:+.4f}, p "
        f"{deciding['p_value']:.3g})"
    )
    return out
