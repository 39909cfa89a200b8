"""Monitoring decisions on a model trained here (embedded store and tracking): the
reference profile it carries, no false alarms on its own distribution, exactly the
shifted features flagged, and a retraining policy that fires only when it should."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlcycle.config import Settings
from mlcycle.monitor.config import MonitorConfig, RetrainPolicy
from mlcycle.monitor.run import build_report, load_reference, retrain_reason
from mlcycle.monitor.window import Window
from mlcycle.spec import DatasetSpec
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.train.mlflow_model import load_pipeline
from mlcycle.train.snapshot import load_snapshot
from mlcycle.train.train import TrainResult
from tests.data import embedded_settings, train_demo


@dataclass
class Trained:
    settings: Settings
    result: TrainResult
    reference: dict[str, Any]
    X: pd.DataFrame
    model: Any
    positions: np.ndarray


@pytest.fixture(scope="module")
def trained(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> Trained:

    root = tmp_path_factory.mktemp("monitor-core")
    settings = embedded_settings(root)
    result = train_demo(spec, settings, 1500)
    store = EmbeddedStore(settings.embedded_store_path)
    snapshot = load_snapshot(store, spec)
    store.close()
    reference, _ = load_reference(settings, spec.registered_model, result.version)
    model = load_pipeline(f"runs:/{result.run_id}/model")
    return Trained(settings, result, reference, snapshot.X, model, snapshot.positions)


def window(spec: DatasetSpec, X: pd.DataFrame, model: Any) -> Window:
    """What the prediction log would hold after the API scored `X`."""
    assert spec.target is not None
    positive = spec.target.labels[spec.target.positive]
    scores = model.predict_proba(X)[:, list(model.classes_).index(positive)]
    negative = next(k for k in spec.target.labels if k != spec.target.positive)
    labels = np.where(scores > 0.5, spec.target.positive, negative).tolist()
    win = Window("loan-approval", "1", requests=len(X), rows=len(X))
    win.numeric = {c: X[c].to_numpy(dtype=np.float64) for c in spec.numeric_features}
    win.categorical = {
        c: Counter(None if isinstance(v, float) else v for v in X[c])
        for c in spec.categorical_features
    }
    win.scores, win.predicted = scores, Counter(labels)
    win.labels = np.array(labels, dtype=object)
    return win


def report(
    spec: DatasetSpec, t: Trained, X: pd.DataFrame, cfg: MonitorConfig | None = None
) -> dict:
    return build_report(
        spec, t.reference, window(spec, X, t.model), cfg or MonitorConfig(), None, None, 0, "r"
    )


def test_every_model_carries_its_reference_profile(spec: DatasetSpec, trained: Trained) -> None:
    ref = trained.reference
    train_rows = int((trained.positions >= 0.2).sum())  # the rows outside the hold-out
    assert ref["rows"] == train_rows and ref["data_hash"] == trained.result.data_hash
    assert set(ref["features"]) == set(spec.feature_columns)
    for name in spec.numeric_features:
        f = ref["features"][name]
        assert sum(f["counts"]) + f["missing"] == train_rows
        assert len(f["counts"]) == len(f["edges"]) + 1 and f["edges"] == sorted(f["edges"])
        assert 0 < len(f["sample"]) <= 2000
    for name in spec.categorical_features:
        assert sum(ref["features"][name]["counts"].values()) == train_rows
    assert sum(ref["score"]["counts"]) == train_rows
    assert ref["validation"] == pytest.approx(trained.result.metrics)
    assert sum(ref["labels"].values()) == train_rows
    bundle = Path(trained.settings.artifact_root)
    assert list(bundle.rglob("serving/profile.json")), "profile.json is not in the serving bundle"


def test_rows_from_the_training_distribution_raise_no_alarm(
    spec: DatasetSpec, trained: Trained
) -> None:
    rng = np.random.default_rng(7)
    flagged = 0
    runs = 40
    for _ in range(runs):
        sample = trained.X.iloc[rng.integers(0, len(trained.X), 500)].reset_index(drop=True)
        r = report(spec, trained, sample)
        parts = [*r["features"].values(), r["score"]]
        flagged += any(p["status"] != "ok" for p in parts)
        assert r["verdict"] in ("ok", "watch")
    assert flagged / runs < 0.05, f"{flagged} of {runs} bootstrap windows raised a flag"


def test_shifted_rows_flag_exactly_the_shifted_features(
    spec: DatasetSpec, trained: Trained
) -> None:
    rng = np.random.default_rng(8)
    shifted = trained.X.iloc[rng.integers(0, len(trained.X), 800)].reset_index(drop=True)
    shifted["ApplicantIncome"] = shifted["ApplicantIncome"] * 3
    shifted["Married"] = shifted["Married"].map({"Yes": "No", "No": "Yes"})
    new = rng.random(len(shifted)) < 0.3
    shifted.loc[new, "Property_Area"] = "Downtown"
    r = report(spec, trained, shifted)
    drifted = {k for k, v in r["features"].items() if v["status"] != "ok"}
    assert drifted == {"ApplicantIncome", "Married", "Property_Area"}
    assert all(r["features"][k]["psi"] > 0.25 for k in drifted)
    assert r["verdict"] == "drift" and r["flagged"] == sorted(drifted)
    unseen = r["features"]["Property_Area"]["unseen"]
    assert unseen["share"] == pytest.approx(new.mean()) and set(unseen["values"]) == {"Downtown"}
    assert r["features"]["ApplicantIncome"]["test"]["p_value"] < 1e-6
    mean = r["features"]["ApplicantIncome"]["mean"]
    assert mean["current"] > 2 * mean["reference"]


def test_too_few_rows_give_no_verdict(spec: DatasetSpec, trained: Trained) -> None:
    shifted = trained.X.head(30).copy()
    shifted["ApplicantIncome"] *= 10
    r = report(spec, trained, shifted)
    assert r["verdict"] == "insufficient"
    assert retrain_reason(r, MonitorConfig()) is None


def test_the_retrain_policy_fires_only_when_its_condition_holds(
    spec: DatasetSpec, trained: Trained
) -> None:
    calm = report(spec, trained, trained.X.sample(600, random_state=1))
    assert retrain_reason(calm, MonitorConfig()) is None
    shifted = trained.X.sample(600, random_state=2).reset_index(drop=True)
    shifted["LoanAmount"] = shifted["LoanAmount"] * 4
    hot = report(spec, trained, shifted)
    reason = retrain_reason(hot, MonitorConfig())
    assert reason is not None and "LoanAmount" in reason
    # a policy that ignores drift does not fire on it
    no_drift = MonitorConfig(retrain=RetrainPolicy(psi=None))
    assert retrain_reason(hot, no_drift) is None
    # a policy on PSI higher than the drift seen does not fire either
    psi = hot["features"]["LoanAmount"]["psi"]
    assert retrain_reason(hot, MonitorConfig(retrain=RetrainPolicy(psi=psi + 0.01))) is None
    # realized AUC: fires below validation minus the allowed drop, with enough matured rows
    valid = trained.result.metrics["roc_auc"]
    for realized, matured, fires in (
        (valid - 0.10, 500, True),
        (valid - 0.02, 500, False),
        (valid - 0.10, 20, False),
    ):
        perf = {"matured": matured, "roc_auc": realized, "validation": {"roc_auc": valid}}
        assert (retrain_reason({**calm, "performance": perf}, MonitorConfig()) is not None) is fires


def test_dashboard_draws_every_feature_and_escapes_data(
    spec: DatasetSpec, trained: Trained
) -> None:
    from mlcycle.monitor.dashboard import render

    hostile = trained.X.sample(300, random_state=3).reset_index(drop=True)
    hostile.loc[:99, "Property_Area"] = "<script>alert(1)</script>"
    r = report(spec, trained, hostile)
    page = render(r, [r])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('class="chart dist"') == len(spec.feature_columns) + 1  # + the score
    assert page.count('class="bar" data-feature=') == len(spec.feature_columns) + 1
    assert 'data-feature="Property_Area" data-status="drift"' in page
    assert "http://" not in page and "https://" not in page  # nothing loaded from anywhere


def test_dashboard_reads_right(spec: DatasetSpec, trained: Trained) -> None:
    """Range labels whole, the drift threshold called drift, an empty unseen bin left
    out, and one report a sentence rather than a chart whose start is its end."""
    import re
    from datetime import UTC, datetime

    from mlcycle.monitor.dashboard import distribution_chart, render, timeline_chart
    from mlcycle.monitor.report import MonitorReport, Performance
    from mlcycle.monitor.stats import UNSEEN_BIN

    built = report(spec, trained, trained.X.sample(300, random_state=4).reset_index(drop=True))
    page = render(built, [built])
    r = MonitorReport.model_validate(built).model_copy(update={"ts": datetime.now(UTC)})
    assert ">drift 0.25<" in page and ">act " not in page and "act 0.25" not in page
    score = distribution_chart("(score)", r.score)
    ranges = [b for b in r.score.bins if " – " in b]
    assert ranges
    for label in ranges:
        low, high = label.split(" – ")
        assert f">{low} –</tspan>" in score and f">{high}</tspan>" in score
    assert "…" not in score
    area = r.features["Property_Area"]
    assert UNSEEN_BIN in area.bins
    drawn = distribution_chart("Property_Area", area)
    assert (UNSEEN_BIN in drawn) == (area.current[area.bins.index(UNSEEN_BIN)] > 0)
    perf = Performance(matured=50, accuracy=0.8, accuracy_ci=[0.7, 0.9], roc_auc=0.75)
    one = r.model_copy(update={"performance": perf})
    text = timeline_chart([one])
    assert "<svg" not in text and "One report" in text and "0.750" in text
    later = one.model_copy(update={"ts": one.ts.replace(year=one.ts.year + 1)})
    two = timeline_chart([later, one])
    xs = [float(x) for x in re.findall(r'class="point roc_auc" cx="([0-9.]+)"', two)]
    assert len(xs) == 2 and xs[0] < xs[1]


def test_a_drop_in_the_newest_period_fires_the_policy_the_whole_window_hides() -> None:
    """Eleven good months and a bad last one: the year's AUC stays within the policy,
    the newest period's does not, and the reason says which period."""
    import pandas as pd

    from mlcycle.monitor.run import _auc_drop, _periods

    rng = np.random.default_rng(5)
    day, frames = 86_400.0, []
    for month in range(12):
        n = 400
        y = rng.random(n) < 0.5
        noise = 0.35 if month < 11 else 1.6  # the world changes in the last month
        score = 1 / (1 + np.exp(-(np.where(y, 1.0, -1.0) + rng.normal(0, 1, n) * noise * 2)))
        frames.append(
            pd.DataFrame(
                {
                    "t": 1.7e9 + (month * 30 + rng.random(n) * 29.9) * day,
                    "score": score,
                    "label": np.where(score > 0.5, "Y", "N"),
                    "truth": np.where(y, "Y", "N"),
                }
            )
        )
    joined = pd.concat(frames, ignore_index=True)
    cfg = MonitorConfig()
    got = _periods(joined, "Y", cfg)
    assert len(got["periods"]) == 12 and sum(p["matured"] for p in got["periods"]) == len(joined)
    aucs = [p["roc_auc"] for p in got["periods"]]
    assert aucs[-1] < min(aucs[:-1]) - 0.1
    assert got["trend"]["metric"] == "roc_auc" and got["trend"]["per_period"] < 0
    valid = float(np.mean(aucs[:-1]))
    whole = {
        "matured": len(joined),
        "roc_auc": valid - 0.03,  # the year's average: inside the 0.05 policy
        "validation": {"roc_auc": valid},
        **got,
    }
    reason = _auc_drop(whole, cfg)
    assert reason is not None and "newest period" in reason and "the whole window" in reason
    assert _auc_drop({**whole, "periods": got["periods"][:-1]}, cfg) is None
    off = MonitorConfig(period_days=None)
    assert _periods(joined, "Y", off) == {}
    assert _auc_drop({k: v for k, v in whole.items() if k not in got}, off) is None


def test_the_confusion_matrix_and_per_class_metrics_match_scikit_learn() -> None:
    import pandas as pd
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from mlcycle.monitor.dashboard import _classes
    from mlcycle.monitor.report import Performance
    from mlcycle.monitor.run import _confusion

    rng = np.random.default_rng(5)
    truth = rng.choice(["a", "b", "c"], 400, p=[0.5, 0.3, 0.2])
    label = np.where(rng.random(400) < 0.7, truth, rng.choice(["a", "b", "c"], 400))
    label[:3] = "b"  # no row predicts "c" correctly among these; every label still seen
    joined = pd.DataFrame({"truth": truth, "label": label})
    out = _confusion(joined, ["a", "b", "c"])
    expected = confusion_matrix(truth, label, labels=["a", "b", "c"])
    assert out["confusion"]["labels"] == ["a", "b", "c"]
    counts = out["confusion"]["counts"]
    assert [[counts[t][p] for p in "abc"] for t in "abc"] == expected.tolist()
    p, r, f, support = precision_recall_fscore_support(truth, label, labels=["a", "b", "c"])
    for i, name in enumerate(["a", "b", "c"]):
        got = out["per_class"][name]
        assert got["precision"] == pytest.approx(p[i]) and got["recall"] == pytest.approx(r[i])
        assert got["f1"] == pytest.approx(f[i]) and got["support"] == support[i]
    perf = Performance(matured=400, accuracy=0.7, accuracy_ci=[0.6, 0.8], **out)
    html = _classes(perf)
    assert "<th>true c</th>" in html and "<th>predicted a</th>" in html
    assert f'<td class="num">{expected[0, 0]:,}</td>' in html


def test_each_feature_carries_summary_statistics_training_against_the_window(
    spec: DatasetSpec, trained: Trained
) -> None:
    from mlcycle.monitor.dashboard import render

    rows = trained.X.sample(300, random_state=9).reset_index(drop=True)
    built = report(spec, trained, rows)
    income = built["features"]["ApplicantIncome"]["summary"]
    present = rows["ApplicantIncome"].dropna()
    assert income["current"]["rows"] == len(rows)
    assert income["current"]["median"] == pytest.approx(float(present.median()))
    assert income["current"]["max"] == pytest.approx(float(present.max()))
    assert income["current"]["std"] == pytest.approx(float(present.std(ddof=0)))
    learned = trained.X.loc[trained.positions >= 0.2, "ApplicantIncome"]  # outside the hold-out
    assert income["reference"]["rows"] == len(learned)
    assert income["reference"]["mean"] == pytest.approx(float(learned.mean()))
    assert income["reference"]["missing"] == pytest.approx(float(learned.isna().mean()))
    area = built["features"]["Property_Area"]["summary"]
    top = rows["Property_Area"].value_counts()
    assert area["current"]["top"] == top.index[0]
    assert area["current"]["top_share"] == pytest.approx(top.iloc[0] / top.sum())
    assert area["current"]["distinct"] == rows["Property_Area"].nunique()
    page = render(built, [built])
    assert page.count('<table class="summary">') == len(built["features"]) + 1  # + the score
    assert "<th>training</th><th>window</th>" in page
