"""Fairness measured at training: every version carries it (MLflow metrics and
`evaluation/fairness.json`), and a configured bound refuses a candidate, saying which."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from mlcycle import registry
from mlcycle.spec import DatasetSpec
from mlcycle.store.embedded import EmbeddedStore
from mlcycle.train.config import load_train_config
from mlcycle.train.train import run_train
from tests.data import CONFIG_PATH, embedded_settings, train_demo


def test_training_measures_fairness_and_a_bound_refuses_the_candidate(
    spec: DatasetSpec, tmp_path: Path
) -> None:
    assert spec.sensitive == ["Gender", "Married"]
    settings = embedded_settings(tmp_path)
    first = train_demo(spec, settings, 800)
    assert set(first.fairness) == {"Gender", "Married"}
    gender = first.fairness["Gender"]
    assert {"Male", "Female"} <= set(gender["groups"])
    held = first.evaluation["set"]["rows"]  # type: ignore[index]
    assert sum(g["count"] for g in gender["groups"].values()) == held
    run = mlflow.get_run(first.run_id)
    assert run.data.metrics["fairness_Gender_demographic_parity_difference"] == pytest.approx(
        gender["demographic_parity_difference"]
    )
    folder = mlflow.artifacts.download_artifacts(
        run_id=first.run_id, artifact_path="evaluation", dst_path=str(tmp_path / "art")
    )
    assert json.loads((Path(folder) / "fairness.json").read_text())["Gender"]["groups"]
    # a bound the candidate breaks: refused, the champion stays, the reason names it
    cfg = load_train_config(CONFIG_PATH)
    strict = cfg.model_copy(
        update={"gate": cfg.gate.model_copy(update={"fairness": {"demographic_parity_ratio": 1.0}})}
    )
    store = EmbeddedStore(settings.embedded_store_path)
    try:
        second = run_train(settings, spec, strict, store, again=True)
    finally:
        store.close()
    assert second.decision["promote"] is False
    assert "fairness bound broken" in second.decision["reason"]
    assert "demographic parity ratio" in second.decision["reason"]
    client = registry.connect(settings, create=False)
    assert registry.champion(client, spec.registered_model).version == first.version  # type: ignore[union-attr]


def test_every_run_logs_its_model_card(spec: DatasetSpec, tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    result = train_demo(spec, settings, 400)
    folder = Path(
        mlflow.artifacts.download_artifacts(run_id=result.run_id, dst_path=str(tmp_path / "a"))
    )
    text = (folder / "model_card.md").read_text()
    assert f"Run `{result.run_id}`" in text and "## Fairness" in text
    assert f"{result.rows} labelled rows" in text
    assert "<table>" in (folder / "model_card.html").read_text()
    from mlcycle.bundle import FOLDER

    assert (folder / FOLDER / "model_card.md").read_text() == text
    _every_number_comes_from_the_run(text, folder / "evaluation", result)


def _every_number_comes_from_the_run(text: str, evaluation: Path, result: object) -> None:
    """Each figure the card shows (4-decimal metrics and counts) is one the run recorded:
    its metrics, fairness, importance and rules files; the tables match them row by row."""
    import re

    recorded = {
        name: json.loads((evaluation / f"{name}.json").read_text())
        for name in ("metrics", "fairness", "importance", "rules", "intervals")
    }
    numbers: set[str] = set()

    def collect(value: object) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, float):
            numbers.update({f"{value:.4f}", f"{value:+.4f}"})
        elif isinstance(value, int):
            numbers.add(str(value))
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    collect(recorded)
    collect(result.rows)  # type: ignore[attr-defined]
    model_accuracy = recorded["metrics"]["test"]["accuracy"]
    numbers.add(f"{model_accuracy - recorded['rules'][0]['accuracy']:+.4f}")
    body = re.sub(r"`[^`]*`", "", text)  # code spans: ids, hashes, params, rule texts
    shown = re.findall(r"(?<![\w.])[+-]?\d+\.\d{4}(?!\d)", body)
    assert shown, text
    assert [n for n in shown if n not in numbers] == []
    # the tables are the files, in order
    importance = recorded["importance"]
    assert importance and list(importance.values()) == sorted(importance.values(), reverse=True)
    for feature, value in importance.items():
        assert f"| {feature} | {value:.4f} |" in text
    for rule in recorded["rules"][:3]:
        assert f"| {rule['feature']} | `{rule['rule'][:120]}` | {rule['accuracy']:.4f} |" in text
    for metric in ("accuracy", "roc_auc"):
        low, high = recorded["intervals"][metric]
        assert low <= recorded["metrics"]["test"][metric] <= high
        row = f"| {metric} | {recorded['metrics']['test'][metric]:.4f} | {low:.4f} – {high:.4f} | "
        assert row + f"{recorded['metrics']['baseline'][metric]:.4f} |" in text
