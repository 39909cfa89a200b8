"""Training benchmark: what each model kind scores on the loan table, and how close its
ONNX graph is to scikit-learn.

    python benchmarks/train.py                    # ../shared/data/loan when present, else synthetic
    python benchmarks/train.py --source data/raw

The table is loaded with the ETL into a temporary embedded store; each model kind is
fitted with the packaged training config (hold-out chosen by a hash of each id, 5-fold CV on the training
part, majority-class baseline) and exported to ONNX, whose largest difference from
scikit-learn's probabilities over every row is shown. The one-line rule "approve iff
Credit_History is 1" is scored on the same folds and hold-out, for scale. Prints
Markdown; nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mlcycle.etl.pipeline import run_etl  # noqa: E402
from mlcycle.spec import load_spec, packaged  # noqa: E402
from mlcycle.store.embedded import EmbeddedStore  # noqa: E402
from mlcycle.train.config import ModelConfig, load_train_config  # noqa: E402
from mlcycle.train.export import export_onnx  # noqa: E402
from mlcycle.train.fitting import fit, split  # noqa: E402
from mlcycle.train.snapshot import load_snapshot  # noqa: E402

KINDS = ("logistic_regression", "hist_gradient_boosting", "random_forest")
REAL = REPO.parent / "shared" / "data" / "loan"


def _rule(snapshot, cfg, spec) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """CV accuracy (mean, std) and hold-out accuracy of "approve iff Credit_History == 1"."""
    positive = spec.target.labels[spec.target.positive]
    part = split(snapshot, cfg)

    def guess(X):  # type: ignore[no-untyped-def]
        return np.where(X["Credit_History"].fillna(0).to_numpy() == 1, positive, 1 - positive)

    folds = [
        float((guess(part.X_train.iloc[test]) == part.y_train[test]).mean())
        for _, test in part.folds.split(part.X_train, part.y_train)
    ]
    return (
        float(np.mean(folds)),
        float(np.std(folds)),
        float((guess(part.X_test) == part.y_test).mean()),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, help="a loan CSV or folder")
    args = parser.parse_args()
    spec = load_spec(packaged("datasets/loan.yaml"))
    base = load_train_config(packaged("configs/train.yaml"))
    source = args.source or (REAL / "train.csv" if (REAL / "train.csv").exists() else None)
    work = Path(tempfile.mkdtemp(prefix="mlcycle-train-bench-"))
    if source is None:
        from mlcycle.datagen import write_demo

        source = write_demo(spec, work / "loans.csv", 1000, seed=1)
    store = EmbeddedStore(work / "store.sqlite3")
    run_etl(spec, source, store)
    snapshot = load_snapshot(store, spec)
    print(
        f"table: {source.name if source.parent != work else 'synthetic'}, {len(snapshot.ids):,} labelled rows"
    )
    print()
    print(
        "| model | CV accuracy | CV ROC AUC | hold-out accuracy | hold-out ROC AUC | baseline accuracy | ONNX max abs diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind in KINDS:
        cfg = base.model_copy(update={"model": ModelConfig(kind=kind), "search": None})
        fitted = fit(snapshot, spec, cfg)
        exported = export_onnx(fitted.pipeline, spec, snapshot.X)
        cv = fitted.cv
        diff = "none" if exported.max_abs_diff is None else f"{exported.max_abs_diff:.1e}"
        print(
            f"| {kind} | {cv['cv_accuracy_mean']:.3f} ± {cv['cv_accuracy_std']:.3f} | "
            f"{cv['cv_roc_auc_mean']:.3f} ± {cv['cv_roc_auc_std']:.3f} | "
            f"{fitted.metrics['accuracy']:.3f} | {fitted.metrics['roc_auc']:.3f} | "
            f"{fitted.baseline['accuracy']:.3f} | {diff} |",
            flush=True,
        )
    mean, std, held = _rule(snapshot, base, spec)
    print()
    print(
        f'the rule "approve iff Credit_History is 1": CV accuracy {mean:.3f} ± {std:.3f}, hold-out accuracy {held:.3f}'
    )
    store.close()


if __name__ == "__main__":
    from benchmarks.common import record

    record("train", main)
