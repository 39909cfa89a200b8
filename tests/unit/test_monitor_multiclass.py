"""Realized performance of a three-class model: the top label right or wrong, and the
calibration of its score, against labels that arrived later (no positive label)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle.etl.pipeline import run_etl
from mlcycle.monitor.run import realized_performance
from mlcycle.monitor.window import Window
from mlcycle.spec import parse_spec
from mlcycle.store.embedded import EmbeddedStore
from tests.data import TIERS_SPEC


def test_three_class_realized_accuracy_is_the_share_of_right_top_labels(tmp_path: Path) -> None:
    spec = parse_spec(TIERS_SPEC)
    truth = pd.DataFrame(
        {
            "account": [f"A{i}" for i in range(6)],
            "balance": [100.0] * 6,
            "visits": [3] * 6,
            "channel": ["web"] * 6,
            "tier": ["low", "mid", "high", "low", "mid", "high"],
        }
    )
    truth.to_csv(tmp_path / "tiers.csv", index=False)
    store = EmbeddedStore(tmp_path / "store.sqlite3")
    try:
        run_etl(spec, tmp_path / "tiers.csv", store)
        win = Window(model_name="m", version="1")
        win.ids = np.array(["A0", "A1", "A2", "A3", "A9"], dtype=object)  # A9: no label yet
        win.labels = np.array(["low", "low", "high", "mid", "low"], dtype=object)
        win.scores = np.array([0.9, 0.6, 0.8, 0.5, 0.7])
        perf = realized_performance(store, spec, win, {"positive": None, "validation": {}})
    finally:
        store.close()
    assert perf is not None
    assert perf["matured"] == 4
    assert perf["accuracy"] == 0.5  # A0 and A2 right, A1 and A3 wrong
    assert perf["roc_auc"] is None and perf["f1"] is None and perf["positives"] is None
    assert 0.0 <= perf["calibration"]["brier"] <= 1.0
