"""Test data the repository makes itself, and the real loan CSVs where they exist.

`loan_files` writes a synthetic Loan Prediction table (labelled train.csv, unlabelled
test.csv) from the bundled spec's `demo` hints. Tests that take the `loan_dir` fixture run
on it always, and also on the real CSVs in ../shared/data/loan when that folder exists:
nothing is skipped where it does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from mlcycle.train.train import TrainResult

from mlcycle.config import Settings
from mlcycle.datagen import generate, write_demo
from mlcycle.spec import DatasetSpec, packaged, parse_spec

REPO = Path(__file__).resolve().parents[1]
SPEC_PATH = packaged("datasets/loan.yaml")
CONFIG_PATH = packaged("configs/train.yaml")
REAL_LOAN_DIR = REPO.parent / "shared" / "data" / "loan"


def real_loan_available() -> bool:
    return (REAL_LOAN_DIR / "train.csv").is_file() and (REAL_LOAN_DIR / "test.csv").is_file()


def write_loan_files(spec: DatasetSpec, folder: Path, train: int = 614, test: int = 367) -> Path:
    """A labelled train.csv and an unlabelled test.csv shaped like the real ones."""
    folder.mkdir(parents=True, exist_ok=True)
    generate(spec, train, seed=11).to_csv(folder / "train.csv", index=False)
    unlabelled = generate(spec, test, seed=12).drop(columns=[spec.target_column])
    unlabelled.to_csv(folder / "test.csv", index=False)
    return folder


@dataclass(frozen=True)
class Counts:
    train: int
    test: int
    labels: dict[str, int]
    missing: dict[str, int]

    @property
    def total(self) -> int:
        return self.train + self.test


def counts(folder: Path, spec: DatasetSpec) -> Counts:
    """Rows, label counts and empty cells per column of train.csv, read independently."""
    train = pd.read_csv(folder / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(folder / "test.csv", dtype=str, keep_default_na=False)
    assert spec.target_column is not None
    return Counts(
        train=len(train),
        test=len(test),
        labels=train[spec.target_column].value_counts().to_dict(),
        missing={c: int((train[c].str.strip() == "").sum()) for c in train.columns},
    )


def renamed(spec: DatasetSpec, model_name: str, **changes: object) -> DatasetSpec:
    """The spec with another registered model name (and other top-level changes)."""
    data = spec.model_dump(mode="json", exclude_none=True)
    return parse_spec({**data, "model_name": model_name, **changes})


def write_spec(spec: DatasetSpec, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    return path


CREDIT_SPEC = {
    "name": "credit",
    "id_column": "client_id",
    "target": {"column": "default", "labels": {"0": 0, "1": 1}, "positive": "1"},
    "columns": {
        "client_id": {"type": "string", "nullable": False},
        "age": {"type": "integer", "min": 18, "max": 100, "demo": {"median": 40, "spread": 0.3}},
        "income": {
            "type": "float",
            "min": 0,
            "nullable": False,
            "demo": {"median": 3000, "spread": 0.5, "effect": -0.8},
        },
        "region": {
            "type": "category",
            "values": ["north", "south", "east"],
            "demo": {"effect": {"south": 0.7}},
        },
        "owns_home": {"type": "boolean", "demo": {"effect": {"true": -0.6}}},
        "default": {"type": "integer", "values": [0, 1]},
    },
}
"""A second dataset of another shape, written as a user would from docs/spec.md: an
integer 0/1 target, an integer and a boolean feature, no names of its own for MLflow."""


TIERS_SPEC = {
    "name": "tiers",
    "id_column": "account",
    "target": {"column": "tier", "labels": {"low": 0, "mid": 1, "high": 2}},
    "columns": {
        "account": {"type": "string", "nullable": False},
        "balance": {
            "type": "float",
            "min": 0,
            "demo": {"median": 2000, "spread": 0.8, "effect": 1.2, "missing": 0.05},
        },
        "visits": {
            "type": "integer",
            "min": 0,
            "nullable": False,
            "demo": {"median": 5, "spread": 0.5, "effect": 0.6},
        },
        "channel": {
            "type": "category",
            "values": ["web", "branch", "phone"],
            "demo": {"effect": {"branch": 0.8}, "missing": 0.05},
        },
        "tier": {"type": "category", "values": ["low", "mid", "high"]},
    },
}
"""A three-class dataset: ordered tiers, no positive label."""


LOAN_RECORD = {
    "Loan_ID": "LP1",
    "Gender": "Male",
    "Married": "No",
    "Dependents": "0",
    "Education": "Graduate",
    "Self_Employed": "No",
    "ApplicantIncome": 5849,
    "CoapplicantIncome": 0,
    "LoanAmount": 128,
    "Loan_Amount_Term": 360,
    "Credit_History": 1,
    "Property_Area": "Urban",
}
"""One valid loan record as a client sends it (the README's example)."""


def embedded_settings(root: Path, **changes: object) -> Settings:
    """Settings for a self-contained project under `root`: embedded store and tracking,
    the packaged spec and config, nothing from the caller's environment."""
    from mlcycle.config import get_settings

    return get_settings().model_copy(
        update={
            "data_dir": root / "data",
            "mongo_uri": None,
            "mlflow_tracking_uri": None,
            "spec": SPEC_PATH,
            "train_config": CONFIG_PATH,
            **changes,
        }
    )


def train_demo(spec: DatasetSpec, settings: Settings, rows: int, seed: int = 5) -> TrainResult:
    """Demo rows -> ETL -> a trained, registered, promoted model in `settings`' project."""
    from mlcycle.etl.pipeline import run_etl
    from mlcycle.store.embedded import EmbeddedStore
    from mlcycle.train.config import load_train_config
    from mlcycle.train.train import run_train

    store = EmbeddedStore(settings.embedded_store_path)
    try:
        run_etl(spec, write_demo(spec, settings.data_dir.parent / "raw", rows, seed=seed), store)
        return run_train(settings, spec, load_train_config(CONFIG_PATH), store)
    finally:
        store.close()
