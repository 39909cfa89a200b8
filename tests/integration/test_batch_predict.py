"""`mlcycle predict`: a file scored with the champion by the API's validator and scorer
(the same probabilities as POST /predict), bad rows to the quarantine with their row and
reason, the store as output with lineage and idempotent on rerun, explanations that add
up, and the stored table as a source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlcycle.cli import app
from mlcycle.config import Settings
from mlcycle.serve.batch import load_model, scores_collection
from mlcycle.serve.core import score
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import quarantine_collection
from mlcycle.store.embedded import EmbeddedStore
from tests.data import embedded_settings, train_demo, write_demo

runner = CliRunner()


@pytest.fixture(scope="module")
def project(spec: DatasetSpec, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = embedded_settings(tmp_path_factory.mktemp("batch"), reload_interval=0)
    train_demo(spec, settings, 600)
    return settings


def _env(settings: Settings) -> dict[str, str]:
    return {
        "MLCYCLE_DATA_DIR": str(settings.data_dir),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
    }


def _new_rows(spec: DatasetSpec, folder: Path) -> pd.DataFrame:
    """Unlabelled new applicants, three of them broken."""
    path = Path(write_demo(spec, folder / "gen", 300, seed=77))
    csv = path if path.is_file() else next(path.glob("*.csv"))
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame = frame.drop(columns=[spec.target.column])  # type: ignore[union-attr]
    frame["Loan_ID"] = [f"NEW{i:04d}" for i in range(len(frame))]
    frame.loc[5, "ApplicantIncome"] = "-3"
    frame.loc[17, "Property_Area"] = "Moon"
    frame.loc[40, "Credit_History"] = "maybe"
    return frame


def test_a_file_is_scored_as_the_api_scores_it_and_bad_rows_are_quarantined(
    project: Settings, spec: DatasetSpec, tmp_path: Path
) -> None:
    frame = _new_rows(spec, tmp_path)
    source = tmp_path / "new.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "scores.parquet"
    result = runner.invoke(
        app, ["predict", "--source", str(source), "--out", str(out), "--json"], env=_env(project)
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 300 and summary["scored"] == 297 and summary["rejected"] == 3
    scored = pd.read_parquet(out)
    assert len(scored) == 297 and set(scored["model_version"]) == {summary["model"]["version"]}
    assert not {"NEW0005", "NEW0017", "NEW0040"} & set(scored["Loan_ID"])
    store = EmbeddedStore(project.embedded_store_path)
    bad = store.find(quarantine_collection(spec.name), {"batch_id": summary["batch_id"]})
    assert sorted(d["column"] for d in bad) == [
        "ApplicantIncome",
        "Credit_History",
        "Property_Area",
    ]
    assert all(d["file"].endswith("new.csv") and d["reason"] for d in bad)
    # the same probabilities as POST /predict, row by row
    model = load_model(project, spec, None)
    good = frame[~frame["Loan_ID"].isin(["NEW0005", "NEW0017", "NEW0040"])]
    records = [{k: (v if v != "" else None) for k, v in r.items()} for r in good.to_dict("records")]
    api = score(orjson.dumps({"records": records[:200]}), model, 500).reply.body["predictions"]
    api_y = np.array([p["probabilities"]["Y"] for p in api])
    assert np.allclose(scored["probability_Y"].to_numpy()[:200], api_y, atol=1e-6)  # API rounds
    raw = model.scorer.proba(
        model.validator.validate([dict(r) for r in records[:200]], single=False)
    )
    assert np.abs(scored["probability_Y"].to_numpy()[:200] - raw[:, 1]).max() <= 1e-9
    assert (scored["label"].to_numpy()[:200] == np.array([p["label"] for p in api])).all()
    store.close()


def test_the_store_as_output_keeps_lineage_and_a_rerun_rewrites_the_same_rows(
    project: Settings, spec: DatasetSpec, tmp_path: Path
) -> None:
    source = tmp_path / "new.csv"
    _new_rows(spec, tmp_path).to_csv(source, index=False)
    args = ["predict", "--source", str(source), "--out", "store", "--explain", "--json"]
    first = runner.invoke(app, args, env=_env(project))
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args, env=_env(project))
    assert again.exit_code == 0, again.output
    store = EmbeddedStore(project.embedded_store_path)
    docs = store.find(scores_collection(spec.name))
    assert len(docs) == 297  # one per id and version, whatever the reruns
    one = docs[0]
    assert one["source_sha256"] and one["batch_id"].startswith("predict-")
    contributions = sum(v for k, v in one.items() if k.startswith("contribution_"))
    p = one["probability_Y"]
    assert one["base"] + contributions == pytest.approx(np.log(p / (1 - p)), abs=1e-6)
    store.close()


def test_the_stored_table_is_a_source_and_a_bad_out_is_exit_2(
    project: Settings, spec: DatasetSpec, tmp_path: Path
) -> None:
    out = tmp_path / "stored.csv"
    result = runner.invoke(
        app, ["predict", "--source", "store", "--out", str(out)], env=_env(project)
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 600 and "scored 600 of 600 rows" in result.output
    bad = runner.invoke(
        app, ["predict", "--source", "store", "--out", str(tmp_path / "x.txt")], env=_env(project)
    )
    assert bad.exit_code == 2 and ".parquet or .csv" in bad.output
    assert not list(tmp_path.glob(".x.txt*"))
