"""Train, evaluate, track and register: `run_train` is the stage's one entry point, a
sequence of steps each in its own module:

1. read (`snapshot`): the newest labelled rows from the store, checked;
2. split and 3. fit (`fitting`): a stratified hold-out, k-fold CV, the pipeline;
4. export (`package`): the serving bundle (`mlcycle.bundle`) and monitoring reference;
5. judge (`judge`): candidate and champion scored on the same evaluation rows, the gate's
   verdict;
6. track and register (`tracking`, `mlflow_model`): the MLflow run, the model version;
7. decide: promote to the `champion` alias, or record why not (`mlcycle.decisions`).

Before step 2, a model that already exists is not trained again: the same data, spec,
config and code as a registered version (`training_identity`) is reported, recorded and
skipped; `monitor --retrain` also skips when the champion learned from the same rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcycle import __version__, card, decisions, registry
from mlcycle.bundle import FOLDER as BUNDLE_FOLDER
from mlcycle.bundle import META_FILE, ServingMeta, explainer_file, write_profile
from mlcycle.config import Settings
from mlcycle.engine import LOCAL, Engine
from mlcycle.gate import Decision
from mlcycle.logging_setup import step
from mlcycle.spec import DatasetSpec
from mlcycle.store.base import Store
from mlcycle.train import fairness, holdout, insight
from mlcycle.train.cluster import ClusterTraining, fits_on_cluster
from mlcycle.train.config import TrainConfig
from mlcycle.train.evaluation import positive_class
from mlcycle.train.fitting import FitResult, fit, held_out
from mlcycle.train.judge import HOLDOUT_TAG, Contender, Verdict, judge, registered
from mlcycle.train.mlflow_model import log_pyfunc, log_training_input, raw_example
from mlcycle.train.package import reference, serving_bundle
from mlcycle.train.snapshot import Snapshot, load_snapshot
from mlcycle.train.tracking import run_params, run_tags, run_url, run_view, write_evaluation

logger = logging.getLogger(__name__)


IDENTITY_TAG = registry.TAG + "training_identity"


@dataclass
class TrainResult:
    run_id: str | None
    run_url: str | None
    """The run's page on the tracking server (None for a local store: see `run_view`)."""
    model_name: str
    version: str | None
    rows: int
    data_hash: str
    metrics: dict[str, float]
    baseline: dict[str, float]
    cv: dict[str, float]
    champion_before: dict[str, Any] | None
    decision: dict[str, Any]
    champion_after: str | None
    params: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    """The decision's evidence: the evaluation set (rows, hash) and both models' metrics
    on it (`judge.Verdict.record`)."""
    run_view: str | None = None
    """For a local store: the command that shows its runs."""
    skipped: str | None = None
    """Why nothing was trained (the same model exists; no new labelled rows)."""
    fairness: dict[str, Any] = field(default_factory=dict)
    """Per sensitive column on the evaluation rows: groups and disparities."""
    fitted_on: str | None = None
    """Where the model was fitted when not here (`lightgbm.dask on N workers`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Logged:
    """What step 6 left in MLflow."""

    run_id: str
    version: str
    params: dict[str, Any]


def training_identity(spec: DatasetSpec, cfg: TrainConfig, snapshot: Snapshot) -> str:
    """What makes two trainings the same model: the rows, the spec, the config's model
    part (not the gate or the monitor), the code's version, and whether the model was
    fitted on the cluster's partitions (`train.cluster`) or here."""
    part = cfg.model_dump(mode="json", exclude={"gate", "monitor"})
    lines = [snapshot.data_hash, spec.fingerprint, repr(sorted(part.items())), __version__]
    if snapshot.total is not None:
        lines.append("fitted on the cluster")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def run_train(
    settings: Settings,
    spec: DatasetSpec,
    cfg: TrainConfig,
    store: Store,
    engine: Engine = LOCAL,
    by: str = "train",
    new_data_only: bool = False,
    again: bool = False,
) -> TrainResult:
    """The training stage; see the module docstring. `by` names the command or policy
    recorded with the decision; `new_data_only` (`monitor --retrain`) skips when the
    champion learned from the same rows; `again` trains even a model that exists."""
    assert spec.target is not None
    remote = settings.tracking_uri.startswith(("http://", "https://"))
    # a tracking server is probed first (fail fast); an embedded tracking store is made
    # only once there are rows to train on, so a run that fails leaves no files behind
    client = registry.connect(settings) if remote else None
    cluster = ClusterTraining(engine, spec, cfg) if fits_on_cluster(cfg, engine) else None
    try:
        return _train(settings, spec, cfg, store, engine, client, cluster, by, new_data_only, again)
    finally:
        if cluster is not None:
            cluster.close()


def _train(
    settings: Settings,
    spec: DatasetSpec,
    cfg: TrainConfig,
    store: Store,
    engine: Engine,
    client: Any,
    cluster: ClusterTraining | None,
    by: str,
    new_data_only: bool,
    again: bool,
) -> TrainResult:
    with step(logger, f"reading the labelled rows of {spec.name!r}"):
        snapshot = cluster.open(store) if cluster else load_snapshot(store, spec, engine)
    cfg = cluster.cfg if cluster else held_out(cfg, snapshot.rows)  # (the cluster split it)
    name = spec.registered_model
    with step(logger, f"asking MLflow for {name}'s champion and what it learned from"):
        client = client or registry.connect(settings)
        current = registry.champion(client, name)
        why = None if again else unchanged(client, spec, cfg, snapshot, current, new_data_only)
    if why is not None:
        return skipped(client, spec, snapshot, current, why, by)
    rows = f"{snapshot.rows:,} rows (data {snapshot.data_hash[:12]})"
    if cluster is not None:
        with step(logger, f"training {cfg.model.kind} on {rows} with {cluster.describe()}"):
            fitted = cluster.fit()
    else:
        with step(logger, f"training {cfg.model.kind} on {rows}: cross-validation, then the fit"):
            fitted = fit(snapshot, spec, cfg, engine)
    experiment_id = registry.ensure_experiment(client, spec.experiment_name, settings)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / BUNDLE_FOLDER
        with step(logger, "exporting the serving bundle and checking its parity"):
            meta = serving_bundle(fitted.pipeline, spec, snapshot, folder)
        verdict = judge_candidate(client, spec, cfg, snapshot, fitted, meta, current)
        fitted.fairness = measure_fairness(spec, snapshot, fitted)
        verdict = fairness_gate(verdict, fitted.fairness, cfg)
        with step(logger, "logging the run and registering the version in MLflow"):
            logged = log_run(
                settings, spec, cfg, store, snapshot, fitted, verdict, experiment_id, folder, meta
            )
    with step(logger, f"recording the decision on v{logged.version}"):
        record_decision(client, spec, cfg, logged, verdict, snapshot, meta, current, by)
    after = registry.champion(client, name)
    champ = verdict.champion
    return TrainResult(
        run_id=logged.run_id,
        run_url=run_url(settings, experiment_id, logged.run_id),
        run_view=run_view(settings),
        model_name=name,
        version=logged.version,
        rows=snapshot.rows,
        data_hash=snapshot.data_hash,
        metrics=fitted.metrics,
        baseline=fitted.baseline,
        cv=fitted.cv,
        fairness=fitted.fairness,
        champion_before=None
        if current is None
        else {"version": current.version, "metrics": champ or {}},
        decision={
            "promote": verdict.decision.promote,
            "reason": verdict.decision.reason,
            "metric": cfg.gate.metric,
            "alias": _alias_moved(cfg, verdict, current),
        },
        champion_after=after.version if after else None,
        params=logged.params,
        evaluation=verdict.record(),
        fitted_on=cluster.describe() if cluster else None,
    )


def unchanged(
    client: Any,
    spec: DatasetSpec,
    cfg: TrainConfig,
    snapshot: Snapshot,
    current: registry.VersionInfo | None,
    new_data_only: bool,
) -> str | None:
    """Why training would add nothing, or None: a registered version is this very model
    (same rows, spec, config and code), or (`new_data_only`) the champion learned from
    these rows already."""
    learned = current.tags.get(registry.TAG + "data_hash") if current else None
    if new_data_only and current is not None and learned == snapshot.data_hash:
        return (
            f"no new labelled data: champion v{current.version} was trained on these "
            f"{snapshot.rows:,} rows (data {snapshot.data_hash[:12]})"
        )
    identity = training_identity(spec, cfg, snapshot)
    for mv in client.search_model_versions(registry.name_filter(spec.registered_model)):
        if (mv.tags or {}).get(IDENTITY_TAG) == identity:
            return (
                f"v{mv.version} is this model already: trained on the same "
                f"{snapshot.rows:,} rows (data {snapshot.data_hash[:12]}) with the same "
                "spec, config and code; no new version registered (train --again trains "
                "and registers it anyway)"
            )
    return None


def skipped(
    client: Any,
    spec: DatasetSpec,
    snapshot: Snapshot,
    current: registry.VersionInfo | None,
    why: str,
    by: str,
) -> TrainResult:
    """Nothing trained: the cause is recorded (when there is a registered model)."""
    logger.info("nothing to train: %s", why)
    name = spec.registered_model
    champ = current.version if current else None
    if registry.model_exists(client, name):
        with registry.refused_as_error(f"record a decision on {name}"):
            decisions.record(
                client,
                name,
                decisions.Event(action="skip", before=champ, after=champ, by=by, reason=why),
            )
    return TrainResult(
        run_id=None,
        run_url=None,
        model_name=name,
        version=None,
        rows=snapshot.rows,
        data_hash=snapshot.data_hash,
        metrics={},
        baseline={},
        cv={},
        champion_before=None,
        decision={"promote": False, "reason": why, "metric": None},
        champion_after=champ,
        skipped=why,
    )


def write_card(
    folder: Path,
    spec: DatasetSpec,
    cfg: TrainConfig,
    snapshot: Snapshot,
    fitted: FitResult,
    verdict: Verdict,
    run_id: str,
    insight: dict[str, Any],
) -> None:
    """The model card, into the bundle (so the server answers `GET /model/card`) and at
    the run's top level."""
    import mlflow

    found = {
        "run_id": run_id,
        "rows": snapshot.rows,
        "data_hash": snapshot.data_hash,
        "batches": snapshot.batch_ids,
        "loaded": snapshot.loaded,
        "labels": _label_balance(spec, snapshot),
        "metrics": fitted.metrics,
        "baseline": fitted.baseline,
        "cv": fitted.cv,
        "evaluation": verdict.record(),
        "decision": {"promote": verdict.decision.promote, "reason": verdict.decision.reason},
        "fairness": fitted.fairness,
        **insight,
    }
    params = {**cfg.model.params, **fitted.best_params}
    text = card.render_card(spec, cfg.model.kind, params, found)
    (folder / card.CARD_MD).write_text(text)
    (folder / card.CARD_HTML).write_text(card.card_html(text))
    mlflow.log_text(text, card.CARD_MD)
    mlflow.log_text(card.card_html(text), card.CARD_HTML)


def _label_balance(spec: DatasetSpec, snapshot: Snapshot) -> dict[str, int]:
    """Rows per label, in the spec's label order."""
    assert spec.target is not None
    counts = snapshot.label_counts(max(spec.target.labels.values()) + 1)
    return {label: int(counts[spec.target.labels[label]]) for label in spec.target.label_order}


def write_insight(
    evaluation: Path, folder: Path, spec: DatasetSpec, fitted: FitResult, meta: ServingMeta
) -> dict[str, Any]:
    """Global feature importance and the one-feature rules on the hold-out rows
    (`train.insight`), into `evaluation/importance.json` and `evaluation/rules.json`."""
    labels = meta.class_labels
    found = {
        "importance": insight.feature_importance(
            folder, spec, fitted.x_test, labels, meta.positive_index, meta.fill or {}
        ),
        "rules": insight.one_feature_rules(
            spec,
            fitted.split.X_train,
            fitted.split.y_train,
            fitted.x_test,
            fitted.y_test,
            {v: k for k, v in meta.labels.items()},
        ),
        "intervals": insight.metric_intervals(
            fitted.pipeline, fitted.x_test, fitted.y_test, positive_class(spec)
        ),
    }
    for name, value in found.items():
        (evaluation / f"{name}.json").write_text(json.dumps(value, indent=2))
    return found


def measure_fairness(spec: DatasetSpec, snapshot: Snapshot, fitted: FitResult) -> dict[str, Any]:
    """The candidate's fairness on its hold-out rows, by the spec's sensitive columns
    (two labels only; `{}` otherwise)."""
    assert spec.target is not None
    if snapshot.sensitive is None or not spec.target.binary or fitted.x_test.empty:
        return {}
    positive = spec.target.labels[str(spec.target.positive)]
    column = list(fitted.pipeline.classes_).index(positive)
    proba = fitted.pipeline.predict_proba(fitted.x_test)
    pred = np.asarray(fitted.pipeline.classes_)[proba.argmax(axis=1)] == positive
    groups = snapshot.sensitive.loc[fitted.x_test.index].reset_index(drop=True)
    return fairness.assess(groups, fitted.y_test == positive, pred, proba[:, column])


def fairness_gate(verdict: Verdict, found: dict[str, Any], cfg: TrainConfig) -> Verdict:
    """A passing candidate past a configured fairness bound is refused, saying which."""
    bounds: dict[str, float] = {str(k): v for k, v in cfg.gate.fairness.items()}
    broken = fairness.breaches(found, bounds) if bounds else []
    if not broken or not verdict.decision.promote:
        return verdict
    verdict.decision = Decision(False, "fairness bound broken: " + "; ".join(broken))
    return verdict


def judge_candidate(
    client: Any,
    spec: DatasetSpec,
    cfg: TrainConfig,
    snapshot: Snapshot,
    fitted: FitResult,
    meta: ServingMeta,
    current: registry.VersionInfo | None,
) -> Verdict:
    """Step 5: the candidate and the champion on the same evaluation rows."""
    candidate = Contender(
        "candidate",
        None,
        fitted.pipeline,
        cfg.test_size,
        spec.contract_hash,
        None
        if meta.runtime == "onnx"
        else f"no ONNX graph matching scikit-learn ({meta.onnx_note})",
    )
    rival = registered(client, current) if current is not None else None
    return judge(snapshot, spec, cfg.gate, candidate, rival)


def log_run(
    settings: Settings,
    spec: DatasetSpec,
    cfg: TrainConfig,
    store: Store,
    snapshot: Snapshot,
    fitted: FitResult,
    verdict: Verdict,
    experiment_id: str,
    folder: Path,
    meta: ServingMeta,
) -> Logged:
    """Step 6: the MLflow run with its evaluation, the serving bundle (exported into
    `folder`) and the pyfunc model, registered as a new version."""
    import mlflow

    assert spec.target is not None
    params = run_params(spec, cfg, snapshot, fitted)
    tags = run_tags(settings, spec, cfg, snapshot)
    tags[HOLDOUT_TAG] = holdout.tag_value(cfg.test_size)
    tags[IDENTITY_TAG] = training_identity(spec, cfg, snapshot)
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        out = folder.parent
        mlflow.log_params(params)
        mlflow.log_metrics({f"test_{k}": v for k, v in fitted.metrics.items()})
        mlflow.log_metrics({f"baseline_{k}": v for k, v in fitted.baseline.items()})
        mlflow.log_metrics(fitted.cv)
        mlflow.log_metrics(fairness.metrics(fitted.fairness))
        evaluation = out / "evaluation"
        evaluation.mkdir()
        write_evaluation(evaluation, spec, cfg, fitted, verdict.record())
        if fitted.fairness:
            (evaluation / "fairness.json").write_text(json.dumps(fitted.fairness, indent=2))
        insight = write_insight(evaluation, folder, spec, fitted, meta)
        mlflow.log_artifacts(str(evaluation), artifact_path="evaluation")
        log_training_input(spec, store.name, repr(store), snapshot)
        profile = reference(
            fitted.pipeline, snapshot, fitted.x_test.index, spec, cfg, fitted.metrics
        )
        profile["fairness"] = fairness.selection_rates(fitted.fairness)
        write_profile(folder, profile)
        write_card(folder, spec, cfg, snapshot, fitted, verdict, run.info.run_id, insight)
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
            explainer_file(folder),
        )
        return Logged(run.info.run_id, str(info.registered_model_version), params)


def _alias_moved(
    cfg: TrainConfig, verdict: Verdict, current: registry.VersionInfo | None
) -> str | None:
    """The alias a trained candidate took: champion, challenger, or none (refused)."""
    if not verdict.decision.promote:
        return None
    if current is not None and cfg.gate.on_pass == registry.CHALLENGER:
        return registry.CHALLENGER
    return registry.CHAMPION


def _to_challenger(
    client: Any,
    spec: DatasetSpec,
    cfg: TrainConfig,
    version: str,
    verdict: Verdict,
    current: registry.VersionInfo,
    by: str,
) -> None:
    """`gate.on_pass: challenger`: a candidate that passed shadows the champion first."""
    name = spec.registered_model
    holder = registry.holder(client, name, registry.CHALLENGER)
    event = decisions.Event(
        action="promote",
        alias=registry.CHALLENGER,
        before=holder.version if holder else None,
        after=version,
        candidate=version,
        by=by,
        reason=f"passed the gate ({verdict.decision.reason}); scored in shadow beside "
        f"champion v{current.version} until proven on live traffic (gate.on_pass: challenger)",
        evaluation={**verdict.record(), "metric": cfg.gate.metric},
    )
    registry.set_champion(
        client, name, version, event.before, event=event, alias=registry.CHALLENGER
    )


def record_decision(
    client: Any,
    spec: DatasetSpec,
    cfg: TrainConfig,
    logged: Logged,
    verdict: Verdict,
    snapshot: Snapshot,
    meta: ServingMeta,
    current: registry.VersionInfo | None,
    by: str,
) -> None:
    """Step 7: the verdict and the version's lineage on the registered version, the
    decision in the record, and the alias moved when the gate passed."""
    name, version, decision = spec.registered_model, logged.version, verdict.decision
    verdict_word = "promoted" if decision.promote else "rejected"
    tags = {
        registry.CONTRACT_TAG: spec.contract_hash,
        registry.TAG + "gate_decision": verdict_word,
        registry.TAG + "gate_reason": decision.reason,
        registry.TAG + "data_hash": snapshot.data_hash,
        registry.TAG + "row_count": str(snapshot.rows),
        registry.RUNTIME_TAG: meta.runtime,
        HOLDOUT_TAG: holdout.tag_value(cfg.test_size),
        IDENTITY_TAG: training_identity(spec, cfg, snapshot),
        registry.TAG + "eval_rows": str(verdict.evaluation["rows"]),
        registry.TAG + "eval_hash": verdict.evaluation["hash"],
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(
        name, version, description=f"gate: {verdict_word}: {decision.reason}"
    )
    previous = current.version if current else None
    if decision.promote and current is not None and cfg.gate.on_pass == registry.CHALLENGER:
        _to_challenger(client, spec, cfg, version, verdict, current, by)
        return
    event = decisions.Event(
        action="promote" if decision.promote else "refuse",
        before=previous,
        after=version if decision.promote else previous,
        candidate=version,
        by=by,
        reason=decision.reason,
        evaluation={**verdict.record(), "metric": cfg.gate.metric},
    )
    if decision.promote:
        registry.set_champion(client, name, version, previous, event=event)
    else:
        decisions.record(client, name, event)
