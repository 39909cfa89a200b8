"""Train, evaluate, track and register: `run_train` is the stage's one entry point, a
sequence of steps each in its own module:

1. read (`snapshot`): the newest labelled rows from the store, checked;
2. split and 3. fit (`fitting`): a stratified hold-out, k-fold CV, the pipeline;
4. evaluate (`evaluation`): hold-out metrics beside a majority-class baseline and the
   current champion re-scored on the same hold-out;
5. export (`package`): the serving bundle (`mlcycle.bundle`) and monitoring reference;
6. track and register (`tracking`, `mlflow_model`): the MLflow run, the model version;
7. gate (`mlcycle.gate`): promote to the `champion` alias, or record why not.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlcycle import registry
from mlcycle.bundle import FOLDER as BUNDLE_FOLDER
from mlcycle.bundle import META_FILE, ServingMeta, write_profile
from mlcycle.config import Settings
from mlcycle.engine import LOCAL, Engine
from mlcycle.gate import Decision, should_promote
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.train.config import TrainConfig
from mlcycle.train.evaluation import positive_class, rescore
from mlcycle.train.fitting import FitResult, fit
from mlcycle.train.mlflow_model import log_pyfunc, log_training_input, raw_example
from mlcycle.train.package import reference, serving_bundle
from mlcycle.train.snapshot import Snapshot, load_snapshot
from mlcycle.train.tracking import run_params, run_tags, run_url, write_evaluation

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_id: str
    run_url: str
    model_name: str
    version: str
    rows: int
    data_hash: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    cv: dict[str, float]
    champion_before: dict[str, Any] | None
    decision: dict[str, Any]
    champion_after: str | None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Compared:
    """The champion the candidate is compared with: its metrics on the candidate's
    hold-out, or why they cannot be compared (another input contract)."""

    current: registry.VersionInfo | None
    before: dict[str, Any] | None = None
    contract_change: str | None = None


@dataclass
class Logged:
    """What step 6 left in MLflow."""

    run_id: str
    version: str
    meta: ServingMeta
    params: dict[str, Any]


def run_train(
    settings: Settings, spec: DatasetSpec, cfg: TrainConfig, store: Store, engine: Engine = LOCAL
) -> TrainResult:
    """The training stage; see the module docstring."""
    assert spec.target is not None
    client = registry.connect(settings)  # fail fast if tracking is unreachable
    snapshot = load_snapshot(store, spec, engine)
    logger.info(
        "training on %d labelled rows (data %s)", len(snapshot.ids), snapshot.data_hash[:12]
    )
    fitted = fit(snapshot, spec, cfg, engine)
    name = spec.registered_model
    compared = compare_champion(registry.champion(client, name), spec, fitted)
    experiment_id = registry.ensure_experiment(client, spec.experiment_name, settings)
    logged = log_run(settings, spec, cfg, store, snapshot, fitted, compared, experiment_id)
    decision = gate(cfg, fitted, compared, logged.meta)
    record_decision(client, spec, logged, decision, snapshot)
    if decision.promote:
        previous = compared.current.version if compared.current else None
        registry.set_champion(client, name, logged.version, previous)
    after = registry.champion(client, name)
    return TrainResult(
        run_id=logged.run_id,
        run_url=run_url(settings, experiment_id, logged.run_id),
        model_name=name,
        version=logged.version,
        rows=len(snapshot.ids),
        data_hash=snapshot.data_hash,
        metrics=fitted.metrics,
        baseline=fitted.baseline,
        cv=fitted.cv,
        champion_before=compared.before,
        decision={
            "promote": decision.promote,
            "reason": decision.reason,
            "metric": cfg.gate.metric,
        },
        champion_after=after.version if after else None,
        params=logged.params,
    )


def compare_champion(
    current: registry.VersionInfo | None, spec: DatasetSpec, fitted: FitResult
) -> Compared:
    """Step 4's second half: the champion re-scored on the candidate's hold-out, when both
    read the same inputs (the same spec contract)."""
    if current is None:
        return Compared(None)
    theirs = current.tags.get(registry.CONTRACT_TAG)
    if theirs != spec.contract_hash:
        change = (
            f"spec contract {spec.contract_hash[:12]} vs champion v{current.version}'s "
            f"{(theirs or 'none recorded')[:12]}"
        )
        return Compared(current, {"version": current.version, "metrics": {}}, change)
    classes = [int(c) for c in fitted.pipeline.classes_]
    metrics = rescore(current, fitted.x_test, fitted.y_test, positive_class(spec), classes)
    return Compared(current, {"version": current.version, "metrics": metrics})


def log_run(
    settings: Settings,
    spec: DatasetSpec,
    cfg: TrainConfig,
    store: Store,
    snapshot: Snapshot,
    fitted: FitResult,
    compared: Compared,
    experiment_id: str,
) -> Logged:
    """Steps 5 and 6: the MLflow run with its evaluation, the serving bundle and the
    pyfunc model, registered as a new version."""
    import mlflow

    assert spec.target is not None
    params = run_params(spec, cfg, snapshot, fitted)
    tags = run_tags(settings, spec, cfg, snapshot)
    with (
        mlflow.start_run(experiment_id=experiment_id, tags=tags) as run,
        tempfile.TemporaryDirectory() as tmp,
    ):
        out = Path(tmp)
        mlflow.log_params(params)
        mlflow.log_metrics({f"test_{k}": v for k, v in fitted.metrics.items()})
        mlflow.log_metrics({f"baseline_{k}": v for k, v in fitted.baseline.items()})
        mlflow.log_metrics(fitted.cv)
        write_evaluation(out, spec, cfg, fitted, compared.before)
        mlflow.log_artifacts(str(out), artifact_path="evaluation")
        log_training_input(spec, store.name, repr(store), snapshot)
        folder = out / BUNDLE_FOLDER
        meta = serving_bundle(fitted.pipeline, spec, snapshot, folder)
        profile = reference(
            fitted.pipeline, snapshot, fitted.x_test.index, spec, cfg, fitted.metrics
        )
        write_profile(folder, profile)
        mlflow.log_artifacts(str(folder), artifact_path=BUNDLE_FOLDER)
        diff = meta.onnx_max_abs_diff
        mlflow.log_metric("onnx_max_abs_diff", diff if diff is not None else -1)
        names = {v: k for k, v in spec.target.labels.items()}
        info = log_pyfunc(
            fitted.pipeline,
            spec,
            folder / META_FILE,
            raw_example(spec, snapshot.X),
            [names[int(c)] for c in fitted.pipeline.classes_],
            spec.registered_model,
            out,
        )
        return Logged(run.info.run_id, str(info.registered_model_version), meta, params)


def gate(cfg: TrainConfig, fitted: FitResult, compared: Compared, meta: ServingMeta) -> Decision:
    """Step 7: the quality gate's verdict on the candidate."""
    metric = str(cfg.gate.metric)
    return should_promote(
        {metric: fitted.metrics[metric]},
        fitted.baseline,
        compared.before["metrics"] if compared.before else None,
        cfg.gate,
        contract_change=compared.contract_change,
        runtime_problem=None
        if meta.runtime == "onnx"
        else f"no ONNX graph matching scikit-learn ({meta.onnx_note})",
    )


def record_decision(
    client: Any, spec: DatasetSpec, logged: Logged, decision: Decision, snapshot: Snapshot
) -> None:
    """The gate's verdict and the version's lineage, on the registered version."""
    name, version = spec.registered_model, logged.version
    verdict = "promoted" if decision.promote else "rejected"
    client.set_model_version_tag(name, version, registry.CONTRACT_TAG, spec.contract_hash)
    client.update_model_version(name, version, description=f"gate: {verdict}: {decision.reason}")
    client.set_model_version_tag(name, version, registry.TAG + "gate_decision", verdict)
    client.set_model_version_tag(name, version, registry.TAG + "gate_reason", decision.reason)
    client.set_model_version_tag(name, version, registry.TAG + "data_hash", snapshot.data_hash)
    client.set_model_version_tag(name, version, registry.RUNTIME_TAG, logged.meta.runtime)
