"""The monitoring statistics against hand computations and scikit-learn/scipy."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import typer

from mlcycle.cli import parse_since
from mlcycle.monitor.config import MonitorConfig
from mlcycle.monitor.stats import (
    EPS,
    MISSING_BIN,
    UNSEEN_BIN,
    auc_interval,
    calibration,
    category_counts,
    chi2_test,
    f1_interval,
    ks_test,
    numeric_counts,
    psi,
    quantile_edges,
    roc_auc,
    wilson,
)


def test_psi_matches_the_formula_and_is_zero_for_equal_shares() -> None:
    ref, cur = np.array([50, 30, 20]), np.array([20, 30, 50])
    p, q = ref / 100, cur / 100
    assert psi(ref, cur) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    assert psi(ref, ref * 7) == pytest.approx(0.0)
    # an empty bin is floored, never infinite
    assert math.isfinite(psi(np.array([100, 0]), np.array([50, 50])))
    assert psi(np.array([100, 0]), np.array([50, 50])) == pytest.approx(
        (0.5 - 1) * math.log(0.5 / 1) + (0.5 - EPS) * math.log(0.5 / EPS)
    )


def test_numeric_bins_put_edge_values_up_and_count_missing_last() -> None:
    values = np.array([0.0, 1.0, 1.0, 2.5, 9.0, np.nan, np.nan])
    assert numeric_counts(values, [1.0, 3.0]).tolist() == [1, 3, 1, 2]
    edges = quantile_edges(np.array([0.0] * 10 + [1.0] * 90 + [np.nan] * 5), 10)
    assert edges.tolist() == [0.0, 1.0]  # observed values only, no repeats


def test_category_bins_split_unseen_and_missing() -> None:
    names, ref, cur = category_counts(
        {"a": 6, "b": 3, MISSING_BIN: 1}, Counter({"a": 2, "c": 5, "d": 1, None: 2})
    )
    assert names == ["a", "b", UNSEEN_BIN, MISSING_BIN]
    assert ref.tolist() == [6, 3, 0, 1]
    assert cur.tolist() == [2, 0, 6, 2]


def test_auc_equals_scikit_learn_and_interval_contains_it() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.3
    score = np.round(np.clip(y * 0.2 + rng.random(400) * 0.8, 0, 1), 2)  # with ties
    auc = roc_auc(y, score)
    assert auc == pytest.approx(roc_auc_score(y, score))
    lo, hi = auc_interval(auc, int(y.sum()), int((~y).sum()))
    assert lo < auc < hi and hi - lo < 0.2
    assert math.isnan(roc_auc(np.ones(5, dtype=bool), np.ones(5)))


def test_wilson_interval_and_f1_bootstrap() -> None:
    lo, hi = wilson(80, 100)
    assert lo == pytest.approx(0.7112, abs=1e-3) and hi == pytest.approx(0.8666, abs=1e-3)
    y = np.array([True] * 50 + [False] * 50)
    pred = np.array([True] * 40 + [False] * 10 + [True] * 5 + [False] * 45)
    lo, hi = f1_interval(y, pred)
    f1 = 2 * 40 / (2 * 40 + 5 + 10)
    assert lo < f1 < hi


def test_calibration_of_a_perfectly_calibrated_score_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    score = rng.random(200_000)
    y = rng.random(200_000) < score
    cal = calibration(y, score)
    assert cal["ece"] < 0.01
    assert cal["brier"] == pytest.approx(1 / 6, abs=0.01)  # E[p(1-p)] for p ~ U(0, 1)
    lied = calibration(y, np.clip(score + 0.2, 0, 1))
    assert lied["ece"] > 0.1


def test_tests_give_small_p_values_only_for_real_shifts() -> None:
    rng = np.random.default_rng(1)
    ref = rng.lognormal(8, 0.5, 2000)
    assert ks_test(ref, rng.lognormal(8, 0.5, 5000))[1] > 0.001
    assert ks_test(ref, rng.lognormal(8, 0.5, 5000) * 2)[1] < 1e-10
    assert chi2_test(np.array([600, 300, 100]), np.array([61, 29, 10]))[1] > 0.5
    assert chi2_test(np.array([600, 300, 100]), np.array([300, 600, 100]))[1] < 1e-10


def test_monitor_config_rejects_act_below_watch() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="psi_act"):
        MonitorConfig(psi_watch=0.3, psi_act=0.2)


def test_since_takes_durations_and_iso_times() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    assert abs((now - parse_since("24h")) - timedelta(hours=24)) < timedelta(seconds=5)
    assert abs((now - parse_since("7d")) - timedelta(days=7)) < timedelta(seconds=5)
    assert parse_since("2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with pytest.raises(typer.BadParameter, match="duration"):
        parse_since("yesterday")


def test_a_status_says_why_a_psi_at_its_threshold_is_ok_or_not() -> None:
    from mlcycle.monitor.run import _status

    cfg = MonitorConfig()
    status, why = _status(cfg.psi_watch, 0.4, cfg)  # at the threshold, but chance
    assert status == "ok"
    assert f"PSI {cfg.psi_watch:.3f} >= watch" in why and "p 0.4 >= alpha" in why
    status, why = _status(cfg.psi_watch, cfg.alpha / 10, cfg)
    assert status == "watch" and "< alpha" in why
    status, why = _status(cfg.psi_act + 0.2, 1e-9, cfg)
    assert status == "drift" and f">= drift {cfg.psi_act:g}" in why
    status, why = _status(cfg.psi_watch / 2, 1e-9, cfg)
    assert status == "ok" and f"< watch {cfg.psi_watch:g}" in why
