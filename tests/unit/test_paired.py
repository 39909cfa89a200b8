"""The challenger's paired comparison: DeLong's test against its pairwise definition,
McNemar's against its counts, and the monitor's pairing of the shadow log with the
champion's window on matured labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlcycle.monitor.challenger import compare
from mlcycle.monitor.stats import delong, mcnemar
from mlcycle.monitor.window import Window
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import shadow_collection
from mlcycle.store.embedded import EmbeddedStore


def _pairwise(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """DeLong's variance of AUC(b) - AUC(a) from the definition: every (positive,
    negative) pair's kernel, O(m n)."""
    pos, neg = y.astype(bool), ~y.astype(bool)
    comps = []
    for s in (a, b):
        kernel = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        comps.append((kernel.mean(axis=1), kernel.mean(axis=0)))
    s10 = np.cov(np.vstack([comps[0][0], comps[1][0]]))
    s01 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / pos.sum()
    var += (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / neg.sum()
    return float(comps[1][0].mean() - comps[0][0].mean()), float(np.sqrt(var))


def test_delong_matches_its_pairwise_definition_and_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.4
    a = np.round(y * 0.8 + rng.normal(0, 1, 400), 1)  # rounded: ties on purpose
    b = y * 1.4 + rng.normal(0, 1, 400)
    result = delong(y, a, b)
    diff, se = _pairwise(y, a, b)
    assert result["first"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert result["second"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert result["difference"] == pytest.approx(diff, abs=1e-12)
    assert result["se"] == pytest.approx(se, rel=1e-9)
    assert result["ci"][0] > 0 and result["p_value"] < 0.01  # b is better, clearly
    same = delong(y, a, a)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_mcnemar_counts_the_discordant_rows() -> None:
    first = np.array([True] * 50 + [False] * 10 + [True] * 5 + [False] * 35)
    second = np.array([True] * 50 + [True] * 10 + [False] * 5 + [False] * 35)
    result = mcnemar(first, second)
    assert (result["only_first"], result["only_second"]) == (5, 10)
    assert result["difference"] == pytest.approx(0.05)
    assert result["first"] == 0.55 and result["second"] == 0.60
    from scipy.stats import binomtest

    assert result["p_value"] == pytest.approx(binomtest(10, 15, 0.5).pvalue)
    with pytest.raises(ValueError, match="two rows of each class"):
        delong(np.array([True, False, False]), np.zeros(3), np.ones(3))


def _labelled(spec: DatasetSpec, ids: list[str], labels: list[str]) -> list[dict]:
    return [
        {"_id": i, spec.id_column: i, spec.target.column: lab, "_hash": f"h{i}", "_batch_id": "b"}  # type: ignore[union-attr]
        for i, lab in zip(ids, labels, strict=True)
    ]


def _shadow_entries(prefix: str, version: str, ids: list[str], scores: np.ndarray) -> list[dict]:
    """Shadow log entries as the server writes them (`mlcycle.serve.shadow.entry`): the
    requests scored together in one document, a request id and `Y`'s score a row."""
    docs = []
    for start in range(0, len(ids), 37):
        part, p = ids[start : start + 37], scores[start : start + 37]
        docs.append(
            {
                "_id": f"{prefix}{start:05d}",
                "model_version": version,
                "role": "challenger",
                "rows": len(part),
                "request_ids": [f"{prefix}-r{start + k}" for k in range(len(part))],
                "ids": part,
                "labels": ["Y" if x >= 0.5 else "N" for x in p],
                "probabilities": np.maximum(p, 1 - p).tolist(),
                "class_probabilities": {"N": (1 - p).tolist(), "Y": p.tolist()},
            }
        )
    return docs


def test_the_monitor_pairs_the_shadow_with_the_champion_on_matured_ids(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    n = 600
    ids = [f"LP{i:04d}" for i in range(n)]
    truth = rng.random(n) < 0.6
    champion = np.clip(truth * 0.15 + rng.normal(0.5, 0.25, n), 0, 1)
    challenger = np.clip(truth * 0.45 + rng.normal(0.35, 0.15, n), 0, 1)
    store = EmbeddedStore(tmp_path / "s.sqlite3")
    matured = n - 100  # the newest 100 have no label yet
    store.write_rows(
        spec.name, _labelled(spec, ids[:matured], ["Y" if t else "N" for t in truth[:matured]]), []
    )
    store.append(
        shadow_collection(spec.name, "challenger"),
        _shadow_entries("s", "2", ids, challenger),
    )
    win = Window(
        "loan-approval",
        "1",
        ids=np.array(ids[::-1], dtype=object),  # a window is newest first
        scores=champion[::-1],
        labels=np.array(["Y" if p >= 0.5 else "N" for p in champion[::-1]], dtype=object),
    )
    out = compare(store, spec, win, "Y", min_paired=200)
    assert out is not None and out["version"] == "2" and out["paired"] == matured
    y = truth[:matured]
    expected = delong(y, champion[:matured], challenger[:matured])
    assert out["roc_auc"]["difference"] == pytest.approx(expected["difference"], abs=1e-12)
    assert out["verdict"] == "better" and out["metric"] == "roc_auc"
    assert "paired matured rows" in out["reason"]
    # swapped roles: the same evidence, the other way round
    win.scores = challenger[::-1]
    store.append(
        shadow_collection(spec.name, "challenger"),
        _shadow_entries("t", "3", ids, champion),
    )
    out = compare(store, spec, win, "Y", min_paired=200)
    assert out["version"] == "3" and out["verdict"] == "worse"  # type: ignore[index]
    few = compare(store, spec, win, "Y", min_paired=matured + 1)
    assert few["verdict"] == "undecided" and "fewer than" in few["reason"]  # type: ignore[index]
    assert compare(EmbeddedStore(tmp_path / "empty.sqlite3"), spec, win, "Y") is None
    # the shadow's newest version is now the champion (promoted): no challenger to report
    store.append(
        shadow_collection(spec.name, "challenger"), _shadow_entries("u", "1", ids, champion)
    )
    assert compare(store, spec, win, "Y") is None
