"""Fairness in production, computed from a window of logged predictions: a sensitive
column the model reads comes from the log, one it does not see is joined from the stored
rows by id; selection rates against training's, realized rates on matured rows; the
gauges and the dashboard show them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlcycle.monitor.dashboard import _fairness
from mlcycle.monitor.fairness import production_fairness
from mlcycle.monitor.window import Window
from mlcycle.serve.monitoring import fairness_gauges
from mlcycle.spec import DatasetSpec
from tests.data import renamed


@pytest.fixture
def case(spec: DatasetSpec) -> tuple[DatasetSpec, Window, pd.DataFrame]:
    spec2 = renamed(spec, "fair", sensitive=["Gender", "Property_Area"])
    rng = np.random.default_rng(3)
    n = 400
    ids = np.array([f"A{i}" for i in range(n)], dtype=object)
    gender = rng.choice(np.array(["Male", "Female", None], dtype=object), n, p=[0.6, 0.35, 0.05])
    labels = np.where(rng.random(n) < np.where(gender == "Female", 0.5, 0.8), "Y", "N")
    win = Window("m", "1", requests=n, rows=n)
    win.ids, win.labels = ids, labels.astype(object)
    win.scores = rng.random(n)
    win.groups = {"Gender": gender}  # the model reads it; Property_Area it does not
    stored = pd.DataFrame(
        {
            "id": ids[: n - 50],  # the newest 50 predictions' ids are not stored
            "truth": np.where(rng.random(n - 50) < 0.5, rng.choice(["Y", "N"], n - 50), None),
            "Property_Area": rng.choice(["Urban", "Rural"], n - 50),
        }
    )
    return spec2, win, stored


def test_selection_and_realized_rates_by_group(
    case: tuple[DatasetSpec, Window, pd.DataFrame],
) -> None:
    spec2, win, stored = case
    ref = {"positive": "Y", "fairness": {"Gender": {"Male": 0.75, "Female": 0.6}}}
    found = production_fairness(spec2, win, ref, stored)
    assert found is not None and set(found) == {"Gender", "Property_Area"}
    frame = pd.DataFrame({"id": win.ids, "label": win.labels, "Gender": win.groups["Gender"]})
    frame = frame.merge(stored, on="id", how="left")
    frame["Gender"] = frame["Gender"].fillna("(missing)")
    frame["Property_Area"] = frame["Property_Area"].fillna("(missing)")
    for column in ("Gender", "Property_Area"):
        groups = found[column]["groups"]
        assert set(groups) == set(frame[column])
        for group, g in groups.items():
            rows = frame[frame[column] == group]
            assert g["rows"] == len(rows)
            assert g["selection_rate"] == pytest.approx((rows["label"] == "Y").mean())
            lo, hi = g["selection_rate_ci"]
            assert lo <= g["selection_rate"] <= hi
            ripe = rows[rows["truth"].notna()]
            assert g.get("matured", 0) == len(ripe)
            if len(ripe):
                assert g["accuracy"] == pytest.approx((ripe["label"] == ripe["truth"]).mean())
                pos = ripe[ripe["truth"] == "Y"]
                if len(pos):
                    assert g["tpr"] == pytest.approx((pos["label"] == "Y").mean())
        rates = [g["selection_rate"] for g in groups.values()]
        assert found[column]["demographic_parity_difference"] == pytest.approx(
            max(rates) - min(rates)
        )
    male = found["Gender"]["groups"]["Male"]
    assert male["training_selection_rate"] == 0.75
    assert male["change"] == pytest.approx(male["selection_rate"] - 0.75)
    assert found["Gender"]["groups"]["(missing)"]["change"] is None  # not seen at training
    assert found["Property_Area"]["groups"]["(missing)"]["rows"] == 50  # ids not stored

    # the gauges Prometheus scrapes, and the dashboard's section
    samples = {
        (m.name, tuple(sorted(s.labels.items()))): s.value
        for m in fairness_gauges(found)
        for s in m.samples
    }
    key = ("mlcycle_monitor_group_selection_rate", (("column", "Gender"), ("group", "Male")))
    assert samples[key] == pytest.approx(male["selection_rate"])
    gap = (
        "mlcycle_monitor_fairness_disparity",
        (("column", "Gender"), ("disparity", "demographic_parity_difference")),
    )
    assert samples[gap] == pytest.approx(found["Gender"]["demographic_parity_difference"])
    page = _fairness(found)
    assert "<h3>Gender</h3>" in page and "<td>(missing)</td>" in page


def test_nothing_is_measured_without_two_labels_or_sensitive_columns(
    spec: DatasetSpec, case: tuple[DatasetSpec, Window, pd.DataFrame]
) -> None:
    _, win, stored = case
    assert production_fairness(renamed(spec, "x", sensitive=[]), win, {}, stored) is None
    assert "nothing is measured by group" in _fairness(None)
